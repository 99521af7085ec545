"""Decode every image a data section reads, and report every bad file at once.

A truncated PNG, a text file named ``.png`` or an empty file would otherwise stop
a run hours in, at the step that first draws it. ``restorekit data check`` decodes
each file once (a file shared by several tasks, such as the clean images of the
three denoising tasks, is read once) and lists all failures, each with the tasks
that use the file and the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Subset
from tqdm import tqdm

from restorekit.data.build import TaskEntry
from restorekit.data.datasets import RestorationDataset
from restorekit.io.image_files import load_image


@dataclass(frozen=True)
class BadImage:
    """One image that cannot be read: where it is used, which file, and why."""

    tasks: tuple[str, ...]  # dotted keys, e.g. ("data.train.derain", "data.val.derain")
    file: str  # the path, or "<dataset> item <index>" when the dataset names no files
    reason: str


def _items(dataset: Any) -> tuple[Any, Sequence[int]]:
    """(underlying dataset, the indices a run uses): a ``limit`` wraps the dataset in a Subset."""
    if isinstance(dataset, Subset):
        return dataset.dataset, list(dataset.indices)
    return dataset, range(len(dataset))


def _units(entries: Sequence[TaskEntry]) -> dict[Any, list[str]]:
    """What to decode -> the tasks using it: file paths, or (dataset, index) when no file is named."""
    units: dict[Any, list[str]] = {}
    for entry in entries:
        if entry.dataset is None:
            continue
        dataset, indices = _items(entry.dataset)
        for index in indices:
            files = dataset.image_files(index) if isinstance(dataset, RestorationDataset) else ()
            for unit in files or [(id(dataset), index)]:
                units.setdefault(unit, []).append(entry.where)
    return units


def _decode(unit: Any, datasets: dict[int, Any]) -> None:
    if isinstance(unit, Path):
        load_image(unit)
        return
    dataset = datasets[unit[0]]
    if hasattr(dataset, "load"):
        dataset.load(unit[1])
    else:
        dataset[unit[1]]


def find_bad_images(entries: Sequence[TaskEntry], *, progress: bool = True) -> list[BadImage]:
    """Decode every image of every built task; the failures, in the order met."""
    units = _units(entries)
    datasets = {id(_items(e.dataset)[0]): _items(e.dataset)[0] for e in entries if e.dataset is not None}
    bad = []
    bar = tqdm(
        units.items(),
        total=len(units),
        desc="decoding images",
        unit="img",
        file=sys.stderr,
        disable=None if progress else True,
        dynamic_ncols=True,
    )  # None: shown on a terminal only
    for unit, tasks in bar:
        try:
            _decode(unit, datasets)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the check
            bad.append(BadImage(tuple(tasks), _name(unit, datasets), _reason(unit, exc)))
    return bad


def _name(unit: Any, datasets: dict[int, Any]) -> str:
    return str(unit) if isinstance(unit, Path) else f"{type(datasets[unit[0]]).__name__} item {unit[1]}"


def _reason(unit: Any, exc: Exception) -> str:
    message = str(exc)
    prefix = f"{unit}: "
    return message[len(prefix) :] if message.startswith(prefix) else f"{type(exc).__name__}: {message}"


def iter_report(bad: Sequence[BadImage]) -> Iterator[str]:
    """Lines for people: one per bad file."""
    for item in bad:
        yield f"  {item.file}: {item.reason}  (used by {', '.join(item.tasks)})"
