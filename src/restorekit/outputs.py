"""Commands never replace a user's files unless told to (``--overwrite``).

``restore`` plans every output before it restores anything (``engine.infer.plan_outputs``);
``eval --report``, ``eval --save-outputs`` and ``probe --out`` check here, before any
model is built, so a refusal costs nothing and leaves nothing half done.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from restorekit.errors import RestorekitError


class OutputExistsError(RestorekitError, FileExistsError):
    """A command would replace existing files; the message names them and ``--overwrite``."""


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
