"""Which recipe file of a ``base:`` chain wrote each data task, for error messages.

A recipe with ``base: dino_ir`` and a ``data.train`` section of its own keeps the
base's five protocol tasks (dicts merge key by key) unless it writes
``_replace_: true``. When such an inherited task cannot find its folder, the error
names the base it came from (``restorekit data check`` and ``train --dry-run``).
"""

from __future__ import annotations

import os
from pathlib import Path

from restorekit.recipes import BASE_KEY, REPLACE_KEY, find_recipe, load_yaml

SECTIONS = ("train", "val")


def data_task_origins(name_or_path: str | os.PathLike) -> dict[str, Path]:
    """``"data.train.denoise_15"`` -> the recipe file that last wrote that task, along the base chain."""
    return _origins(find_recipe(name_or_path), ())


def inherited_data_tasks(name_or_path: str | os.PathLike) -> dict[str, Path]:
    """Only the tasks a base wrote (not the recipe itself): ``data.<section>.<task>`` -> base file."""
    top = find_recipe(name_or_path)
    return {key: path for key, path in data_task_origins(top).items() if path != top}


def _origins(path: Path, stack: tuple[Path, ...]) -> dict[str, Path]:
    if path in stack:  # a cycle: load_recipe reports it
        return {}
    raw = load_yaml(path)
    bases = raw.get(BASE_KEY) or []
    out: dict[str, Path] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        if isinstance(base, str):
            out.update(_origins(find_recipe(base, relative_to=path.parent), stack + (path,)))
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    for section in SECTIONS:
        node = data.get(section)
        if not isinstance(node, dict):
            continue
        if node.get(REPLACE_KEY):
            out = {k: v for k, v in out.items() if not k.startswith(f"data.{section}.")}
        out.update({f"data.{section}.{task}": path for task in node if task != REPLACE_KEY})
    return out
