"""Commands never replace a user's files unless told to (``--overwrite``), and find out
that an output cannot be written before they do any work.

``restore`` plans every output before it restores anything (``engine.infer.plan_outputs``);
``eval --report``, ``eval --save-outputs``, ``export --output``, ``package`` and ``probe
--out`` check here, before any model is built, so a refusal costs nothing and leaves
nothing half done.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from restorekit.errors import RestorekitError


class OutputExistsError(RestorekitError, FileExistsError):
    """A command would replace existing files; the message names them and ``--overwrite``."""


class OutputPathError(RestorekitError, ValueError):
    """An output that cannot be written where it was asked for; the message names the option and why."""


def check_output_file(file: Path, option: str, *, overwrite: bool) -> None:
    """Refuse, before any work, a file output that could not be written (or would replace one).

    Its folder must exist and take a new file (tried, not guessed from permission bits:
    a read-only mount or a full quota answers only to a real create).
    """
    if file.is_dir():
        raise OutputPathError(f"{option} {file}: is a folder; give a file name")
    if not overwrite:
        refuse_existing([file], option)
    folder = file.parent
    if not folder.exists():
        blocker = _first_existing(folder)
        if blocker is not None and not blocker.is_dir():
            raise OutputPathError(f"{option} {file}: {blocker} is a file, not a folder")
        raise OutputPathError(f"{option} {file}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputPathError(f"{option} {file}: {folder} is a file, not a folder")
    _try_writing(folder, option, file)


def check_output_folder(folder: Path, option: str, *, named: Path | None = None) -> None:
    """Refuse, before any work, a folder output that could not be created or written into.

    A file in its place, or in place of a folder on its path, is refused whatever
    ``--overwrite`` says: that option replaces files inside a folder, never a file.
    Messages name ``named`` (a file to be written in ``folder``) when given.
    """
    shown = named or folder
    if folder.exists() and not folder.is_dir():
        what = f"{folder} is a file" if named else "is a file"
        raise OutputPathError(f"{option} {shown}: {what}, not a folder")
    existing = _first_existing(folder)
    if existing is None:
        return
    if not existing.is_dir():
        raise OutputPathError(f"{option} {shown}: {existing} is a file, not a folder")
    _try_writing(existing, option, shown)


def _first_existing(path: Path) -> Path | None:
    """``path`` or its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def _try_writing(folder: Path, option: str, target: Path) -> None:
    """Create and remove a scratch file in ``folder``: the OS's answer, as root as anyone."""
    try:
        fd, scratch = tempfile.mkstemp(prefix=".restorekit-write-check-", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"{option} {target}: cannot write into {folder}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(scratch)


def refuse_existing(files: Iterable[Path], option: str) -> None:
    """OutputExistsError naming the files of ``files`` that exist."""
    taken = [str(f) for f in files if f.exists()]
    if taken:
        raise OutputExistsError(
            f"{option}: {', '.join(taken)} already exist(s); pass --overwrite to replace, or choose another folder"
        )


def refuse_non_empty(folder: Path, option: str) -> None:
    """OutputExistsError when ``folder`` already holds files (their names are not known in advance)."""
    if not folder.is_dir():
        return
    held = sorted(p for p in folder.rglob("*") if p.is_file())
    if held:
        raise OutputExistsError(
            f"{option} {folder} already holds {len(held)} file(s) (e.g. {held[0]}); pass --overwrite to "
            "replace them, or choose an empty folder"
        )
