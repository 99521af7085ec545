"""Nothing half-written: files and folders appear complete or not at all.

A file is written to a temporary name in the same folder, fsynced, renamed over
the target, and the folder is fsynced so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or creation inside ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``.

    The temporary name keeps the suffix, so writers that pick the format from the
    extension (Pillow, safetensors) still work.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}{target.suffix}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


class _OsWriter(io.RawIOBase):
    """Every byte through ``os.write``: the OS's own error (ENOSPC, EDQUOT, EIO) reaches the caller."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        total = view.nbytes
        while view:
            view = view[os.write(self.fd, view) :]
        return total


@contextlib.contextmanager
def created_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A new binary file at ``path`` (which must not exist), fsynced and closed on exit.

    Writers that stream (``torch.save``) write straight into it; a write error is
    the ``OSError`` the OS raised, with its errno.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        yield _OsWriter(fd)  # type: ignore[misc]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def publish_dir(tmp_dir: Path, target: Path) -> None:
    """Rename a fully written ``tmp_dir`` to ``target`` (replacing an old one)."""
    for child in tmp_dir.iterdir():
        if child.is_file():
            fsync_file(child)
    fsync_dir(tmp_dir)
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp_dir, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
