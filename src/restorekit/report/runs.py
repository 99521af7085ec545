"""What a report reads from a run folder: the resolved recipe, the final evaluation, the
training records and the restored images.

* ``recipe.yaml``: required (it is what makes a folder a run);
* ``eval/eval.json``: the final evaluation (``eval.after_train``, or ``restorekit eval
  --report RUN/eval``);
* ``metrics.jsonl``: loss records and ``"event": "validation"`` records;
* ``eval/outputs/<task>/<name>.png``: restored test images (``restorekit eval ...
  --save-outputs RUN/eval/outputs``), cropped alike across runs, else
  ``eval/grid.png``, the before/after grid of the final evaluation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorekit.engine.evaluate import REPORT_JSON
from restorekit.engine.run_folder import METRICS_FILE, RECIPE_FILE
from restorekit.errors import RestorekitError
from restorekit.io.image_files import is_image_file
from restorekit.recipes import load_yaml

EVAL_DIR, OUTPUTS_DIR, GRID_FILE = "eval", "outputs", "grid.png"


class RunReadError(RestorekitError, ValueError):
    """A RUN argument that is no run folder, or a file in it that cannot be read; the message names it."""


@dataclass
class RunSummary:
    """One run folder, read."""

    name: str
    folder: Path
    recipe: dict[str, Any]
    evaluation: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)  # "task/name" -> restored image
    grid: Path | None = None

    def loss_curve(self) -> list[tuple[float, float]]:
        """(step, loss) of every training record."""
        return [(float(r["step"]), _number(r["loss"])) for r in self.records
                if "event" not in r and "loss" in r and "step" in r]  # fmt: skip

    def validation_curves(self, metric: str = "psnr") -> dict[str, list[tuple[float, float]]]:
        """task -> (step, ``metric``) of every validation record."""
        curves: dict[str, list[tuple[float, float]]] = {}
        for record in self.records:
            if record.get("event") != "validation":
                continue
            for task, row in (record.get("tasks") or {}).items():
                if isinstance(row, Mapping) and metric in row:
                    curves.setdefault(task, []).append((float(record["step"]), _number(row[metric])))
        return curves


def _number(value: Any) -> float:
    """A record's value as a float ("nan" and "inf" are how metrics.jsonl writes those)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_run(folder: str | Path) -> RunSummary:
    """Read one run folder; a missing ``recipe.yaml`` or an unreadable file is a RunReadError naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunReadError(f"RUN {folder}: no such folder")
    recipe_file = folder / RECIPE_FILE
    if not recipe_file.is_file():
        raise RunReadError(f"RUN {folder}: no {RECIPE_FILE} here, so it is not a run folder")
    try:
        recipe = load_yaml(recipe_file)
    except (OSError, ValueError) as exc:
        raise RunReadError(f"RUN {folder}: cannot read {RECIPE_FILE} ({exc})") from exc
    evaluation = _read_json(folder / EVAL_DIR / REPORT_JSON)
    outputs_root = folder / EVAL_DIR / OUTPUTS_DIR
    outputs = {}
    if outputs_root.is_dir():
        outputs = {p.relative_to(outputs_root).with_suffix("").as_posix(): p
                   for p in sorted(outputs_root.rglob("*")) if p.is_file() and is_image_file(p)}  # fmt: skip
    grid = folder / EVAL_DIR / GRID_FILE
    return RunSummary(
        name=folder.resolve().name,
        folder=folder,
        recipe=recipe,
        evaluation=evaluation,
        records=_read_records(folder / METRICS_FILE),
        outputs=outputs,
        grid=grid if grid.is_file() else None,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunReadError(f"{path}: cannot read it ({exc})") from exc


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a line cut short by a kill (the last one) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # as resume does: a partial line is what a killed run leaves
        if isinstance(record, dict):
            records.append(record)
    return records


def read_runs(folders: list[str | Path]) -> list[RunSummary]:
    """Every run, named by its folder (a name seen twice gets ``-2``, ``-3``...)."""
    runs, seen = [], {}
    for folder in folders:
        run = read_run(folder)
        count = seen.get(run.name, 0) + 1
        seen[run.name] = count
        if count > 1:
            run.name = f"{run.name}-{count}"
        runs.append(run)
    return runs
