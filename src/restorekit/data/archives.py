"""Unpacking downloaded dataset archives safely, and listing what a download holds.

A zip or tar from the internet may name members ``../../.bashrc`` or ``/etc/x``, or
hold a link pointing outside the folder it is unpacked into; every such member is
refused (a DataError naming the archive and the member) before anything is
written. A truncated or damaged archive is a DataError naming the file, never a
half-unpacked folder left behind by this module (the caller unpacks into a
temporary folder and deletes it on error).

The odd files archives carry (``__MACOSX/``, ``._name`` forks, ``Thumbs.db``,
``.DS_Store``, ``desktop.ini``) are skipped when listing a download.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from restorekit.errors import DataError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
UNSUPPORTED_SUFFIXES = (".rar", ".7z")
JUNK_FOLDERS = frozenset({"__MACOSX"})
JUNK_FILES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})


def is_junk(relative: str) -> bool:
    """True for the files archives carry that are not data (macOS forks, Windows thumbnails)."""
    parts = PurePosixPath(relative).parts
    name = parts[-1] if parts else ""
    return any(p in JUNK_FOLDERS for p in parts) or name.lower() in JUNK_FILES or name.startswith("._")


def archive_kind(path: Path) -> str | None:
    """``"zip"``, ``"tar"`` or None (a folder, or an unknown file); by suffix, then by content."""
    name = path.name.lower()
    if name.endswith(UNSUPPORTED_SUFFIXES):
        raise DataError(
            f"{path}: {Path(name).suffix} archives are not read by restorekit; unpack it with "
            "`unrar x` or `7z x` and pass the unpacked folder (docs/data.md#preparing-the-downloads)"
        )
    if path.is_dir():
        return None
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(ARCHIVE_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    return None


def _unsafe_name(name: str) -> str | None:
    """Why a member name may not be written, or None when it is safe."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "a '..' component"
    return None


def _check_link(archive: Path, member: str, target: str) -> None:
    """A link inside the archive may only point to another place inside it."""
    resolved = os.path.normpath(os.path.join(os.path.dirname(member), target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise DataError(f"{archive}: member {member!r} is a link to {target!r}, outside the archive; refused")


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = []
    for info in zf.infolist():
        reason = _unsafe_name(info.filename)
        if reason:
            raise DataError(f"{archive}: member {info.filename!r} has {reason}; refused (nothing was unpacked)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{archive}: member {info.filename!r} is a symbolic link; refused (nothing was unpacked)")
        members.append(info)
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for info in tf.getmembers():
        reason = _unsafe_name(info.name)
        if reason:
            raise DataError(f"{archive}: member {info.name!r} has {reason}; refused (nothing was unpacked)")
        if info.issym():
            _check_link(archive, info.name, info.linkname)
        elif info.islnk():
            if _unsafe_name(info.linkname):
                raise DataError(f"{archive}: member {info.name!r} links to {info.linkname!r}, outside the archive")
        elif not (info.isfile() or info.isdir()):
            raise DataError(f"{archive}: member {info.name!r} is a device or pipe; refused (nothing was unpacked)")
        members.append(info)
    return members


def extract(archive: Path, dest: Path, progress: Callable[[int], Iterator[int]] | None = None) -> int:
    """Unpack ``archive`` into the existing folder ``dest``; the number of files written.

    Every member is checked before the first is written. ``progress(total)`` wraps
    the member loop (a tqdm bar in the command). Junk files are not written.
    """
    kind = archive_kind(archive)
    if kind is None:
        raise DataError(f"{archive}: not a zip or tar archive (supported: {', '.join(ARCHIVE_SUFFIXES)}) or a folder")
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in _zip_members(archive, zf) if not m.is_dir() and not is_junk(m.filename)]
                for index in progress(len(members)) if progress else range(len(members)):
                    zf.extract(members[index], dest)
        else:
            with tarfile.open(archive) as tf:
                members = [m for m in _tar_members(archive, tf) if not m.isdir() and not is_junk(m.name)]
                for index in progress(len(members)) if progress else range(len(members)):
                    tf.extract(members[index], dest, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{archive}: the archive is damaged or truncated ({type(exc).__name__}: {exc}); download it again"
        ) from exc
    except OSError as exc:
        if exc.errno is None:  # zlib / lzma errors inside a truncated member
            raise DataError(f"{archive}: the archive is damaged or truncated ({exc}); download it again") from exc
        raise
    return len(members)


def list_files(folder: Path) -> list[str]:
    """Every data file under ``folder``, as sorted POSIX paths relative to it (junk left out)."""
    out = []
    for dirpath, _dirs, files in os.walk(folder, followlinks=True):
        for name in files:
            rel = Path(dirpath, name).relative_to(folder).as_posix()
            if not is_junk(rel):
                out.append(rel)
    return sorted(out)
