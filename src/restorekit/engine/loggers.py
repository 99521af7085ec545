"""Where a run's numbers go: the ``logger`` kind (``train.loggers: [jsonl, tensorboard]``).

A logger is built as ``factory(run_dir, **knobs)`` and keeps the
:class:`~restorekit.contracts.RunLogger` contract. The loop hands every logger the
records ``metrics.jsonl`` holds, so a logger only decides how to show them:

* ``jsonl`` writes ``metrics.jsonl`` (the run's own record: resume drops its lines
  past the checkpoint, and the tests and benchmarks read it);
* ``tensorboard`` (the optional extra ``restorekit[tensorboard]``) writes event files
  under ``<run>/tensorboard``: loss terms, learning rate, gradient norm, it/s, per-task
  validation scores, the before/after grid of each validation and the resolved recipe.

Only rank 0 logs; the other ranks get an empty :class:`LoggerSet`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from restorekit.building import build
from restorekit.engine.run_folder import METRICS_FILE, MetricsLog
from restorekit.errors import RecipeError

logger = logging.getLogger(__name__)

# Builtin loggers that need an optional package: name -> (package, extra to install, module the logger imports).
EXTRAS: dict[str, tuple[str, str, str]] = {"tensorboard": ("tensorboard", "tensorboard", "torch.utils.tensorboard")}


def missing_extra(name: str) -> str | None:
    """Why the builtin logger ``name`` cannot run here, or None.

    The module is imported, not only looked for: an installed package that fails on
    import (a protobuf mismatch) must stop the run before its folder is created.
    """
    if name not in EXTRAS:
        return None
    package, extra, module = EXTRAS[name]
    if importlib.util.find_spec(package) is None:
        return f"the {name} logger needs the optional package {package!r}: pip install 'restorekit[{extra}]'"
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        return (
            f"the {name} logger cannot run here: importing {module} failed with {detail} "
            f"(reinstall it: pip install --force-reinstall 'restorekit[{extra}]', or drop it from train.loggers)"
        )
    return None


class JsonlLogger:
    """``metrics.jsonl``: one JSON line per record (strict JSON; NaN written as "nan")."""

    takes_images = False

    def __init__(self, run_dir: str | Path) -> None:
        self.log = MetricsLog(Path(run_dir) / METRICS_FILE)

    def write(self, record: Mapping[str, Any]) -> None:
        self.log.write(record)

    def add_images(self, step: int, images: Mapping[str, Tensor]) -> None:
        pass  # the grid of the final evaluation is written as eval/grid.png

    def add_text(self, tag: str, text: str) -> None:
        pass  # the resolved recipe is recipe.yaml

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard event files in ``<run>/<subdir>`` (``tensorboard --logdir runs``)."""

    takes_images = True

    def __init__(self, run_dir: str | Path, subdir: str = "tensorboard", flush_secs: int = 30) -> None:
        problem = missing_extra("tensorboard")
        if problem:
            raise RecipeError(problem)
        from torch.utils.tensorboard import SummaryWriter  # why: the optional extra [tensorboard]

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / subdir), flush_secs=flush_secs)

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, step)

    def add_images(self, step: int, images: Mapping[str, Tensor]) -> None:
        for tag, image in images.items():
            self.writer.add_image(tag, image.clamp(0, 1), step)

    def add_text(self, tag: str, text: str) -> None:
        # Markdown: indented by four spaces, the YAML shows as code with its layout kept.
        self.writer.add_text(tag, "\n".join("    " + line for line in text.splitlines()))

    def close(self) -> None:
        self.writer.close()


def scalars(record: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` of every number in a ``metrics.jsonl`` record, named for TensorBoard."""
    event = record.get("event")
    if event is None:
        prefix = "train"
        numbers = {k: v for k, v in record.items() if k not in ("step", "terms")}
        numbers.update({f"terms/{k}": v for k, v in (record.get("terms") or {}).items()})
    elif event == "validation":
        prefix = "val"
        numbers = {f"{task}/{metric}": v for task, row in record.get("tasks", {}).items() for metric, v in row.items()}
        numbers.update({f"mean/{metric}": v for metric, v in record.get("mean", {}).items()})
    else:  # nonfinite_skip, scaler_skip, ...: what they carry, under the event's name
        prefix = f"events/{event}"
        numbers = {k: v for k, v in record.items() if k not in ("step", "event")}
    for key, value in numbers.items():
        number = _number(value)
        if number is not None:
            yield f"{prefix}/{key}", number


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def grid_images(grid: Mapping[str, Sequence[tuple[Tensor, Tensor, Tensor]]]) -> dict[str, Tensor]:
    """``val/<task>/<i>`` -> input | restored | target side by side, from an evaluation's ``grid``."""
    return {
        f"val/{task}/{i}": torch.cat([t.detach().float().cpu() for t in triplet], dim=-1)
        for task, triplets in grid.items()
        for i, triplet in enumerate(triplets)
    }


class LoggerSet:
    """Every logger of a run, written to together."""

    def __init__(self, loggers: Sequence[Any] = ()) -> None:
        self.loggers = list(loggers)

    @property
    def takes_images(self) -> bool:
        return any(log.takes_images for log in self.loggers)

    def write(self, record: Mapping[str, Any]) -> None:
        for log in self.loggers:
            log.write(record)

    def add_images(self, step: int, images: Mapping[str, Tensor]) -> None:
        if images:
            for log in self.loggers:
                if log.takes_images:
                    log.add_images(step, images)

    def add_text(self, tag: str, text: str) -> None:
        for log in self.loggers:
            log.add_text(tag, text)

    def close(self) -> None:
        for log in self.loggers:
            log.close()


def open_loggers(specs: Sequence[Any], run_dir: Path, is_main: bool) -> LoggerSet:
    """The ``train.loggers`` of a run, built through the ``logger`` registry (rank 0 only)."""
    if not is_main:
        return LoggerSet()
    built = []
    for spec in specs:
        built.append(build("logger", spec, run_dir=run_dir))
    return LoggerSet(built)
