"""Nothing half-written: files and folders appear complete or not at all.

A file is written to a temporary name in the same folder, fsynced, renamed over
the target, and the folder is fsynced so the rename itself survives a crash. A writer
that must not replace a file (``replace=False``) gives the temporary file the target's
name with a hard link, which fails if the name exists: of two processes writing one
target, exactly one succeeds and the other's result is never lost.
"""

from __future__ import annotations

import contextlib
import errno
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


class AppearedMeanwhile(FileExistsError):
    """An exclusive write found its target taken at the end: another process wrote it meanwhile."""

    def __init__(self, target: str | os.PathLike) -> None:
        super().__init__(errno.EEXIST, "was written by another process meanwhile; it was not replaced", str(target))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it becomes ``target``.

    The temporary name keeps the suffix, so writers that pick the format from the
    extension (Pillow, safetensors) still work. ``replace=False``: ``target`` is
    created exclusively at the end (:func:`publish_new`); if it exists by then,
    :class:`AppearedMeanwhile` and the existing file is kept.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}{target.suffix}")
    try:
        yield tmp
        fsync_file(tmp)
        if replace:
            os.replace(tmp, target)
        else:
            publish_new(tmp, target)
        fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def publish_new(tmp: Path, target: Path) -> None:
    """Give the complete file ``tmp`` the name ``target`` only if that name is free (atomically).

    ``os.link`` fails with EEXIST when the name exists, whoever created it and when.
    Where a filesystem has no hard links, the name is reserved with ``O_EXCL`` first.
    ``tmp`` itself is left for the caller to remove.
    """
    try:
        os.link(tmp, target)
        return
    except FileExistsError:
        raise AppearedMeanwhile(target) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        raise AppearedMeanwhile(target) from None
    os.replace(tmp, target)


class _OsWriter(io.RawIOBase):
    """Every byte through ``os.write``: the OS's own error (ENOSPC, EDQUOT, EIO) reaches the caller."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.error: OSError | None = None  # the first write error, kept for created_file

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        total = view.nbytes
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            self.error = self.error or exc
            raise
        return total


@contextlib.contextmanager
def created_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A new binary file at ``path`` (which must not exist), fsynced and closed on exit.

    Writers that stream (``torch.save``) write straight into it; a write error is
    the ``OSError`` the OS raised, with its errno, even where the writer replaced it
    with its own (torch's zip writer reports a full disk as "unexpected pos").
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    writer = _OsWriter(fd)
    try:
        yield writer  # type: ignore[misc]
        os.fsync(fd)
    except Exception as exc:
        if writer.error is not None and exc is not writer.error:
            raise writer.error from exc
        raise
    finally:
        os.close(fd)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def publish_dir(tmp_dir: Path, target: Path, *, replace: bool = True) -> None:
    """Rename a fully written ``tmp_dir`` to ``target`` (replacing an old one).

    ``replace=False``: only onto a free name or an empty folder (a rename onto a
    folder with files fails, atomically); otherwise :class:`AppearedMeanwhile`.
    """
    for child in tmp_dir.iterdir():
        if child.is_file():
            fsync_file(child)
    fsync_dir(tmp_dir)
    if not replace:
        try:
            os.rename(tmp_dir, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise
            raise AppearedMeanwhile(target) from None
        fsync_dir(target.parent)
        return
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp_dir, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
