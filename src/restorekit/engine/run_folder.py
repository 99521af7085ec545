"""The run folder: what a run needs to be understood and repeated later.

``recipe.yaml`` (the fully resolved recipe), ``run.json`` (versions of
restorekit, torch, timm, open_clip and every plugin distribution, frozen-part
records, command line, devices), ``metrics.jsonl`` and ``checkpoints/``.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import math
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from restorekit.io.atomic import write_text
from restorekit.recipes import dump_recipe
from restorekit.version import __version__

RECIPE_FILE = "recipe.yaml"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"

_CORE_DISTS = {"restorekit": "restorekit", "torch": "torch", "timm": "timm", "open_clip": "open_clip_torch"}


RUN_STAMP_PATTERN = r"-\d{8}-\d{6}"  # what default_run_dir appends to the recipe's name


def default_run_dir(recipe_name: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{recipe_name}-{stamp}"


def dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def plugin_versions() -> dict[str, str]:
    """``dist -> version`` for every distribution with a ``restorekit.*`` entry point."""
    out: dict[str, str] = {}
    try:
        eps = metadata.entry_points()
        groups = [g for g in eps.groups if g.startswith("restorekit.")]
        for group in groups:
            for ep in eps.select(group=group):
                dist = getattr(ep, "dist", None)
                if dist is not None:
                    out[dist.metadata["Name"] or dist.name] = dist.version
    except Exception:  # noqa: BLE001 - broken metadata never stops a run
        pass
    return dict(sorted(out.items()))


def versions() -> dict[str, Any]:
    """Versions of the core stack and of every plugin distribution."""
    core = {key: dist_version(dist) for key, dist in _CORE_DISTS.items()}
    core["restorekit"] = core["restorekit"] or __version__  # a source checkout on sys.path

    core["torch"] = torch.__version__
    core["cuda"] = torch.version.cuda
    core["python"] = platform.python_version()
    return {**core, "plugins": plugin_versions()}


def write_run_files(run_dir: Path, recipe: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    """Write ``recipe.yaml`` and ``run.json`` (atomically) into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / RECIPE_FILE, dump_recipe(recipe))
    info = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "host": platform.node(),
        "versions": versions(),
        **extra,
    }
    write_text(run_dir / RUN_FILE, json.dumps(info, indent=2, default=str))


class MetricsLog:
    """Append-only JSON lines; on resume the lines past the resumed step are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue  # a line cut short by a kill
        write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_plain(record), allow_nan=False) + "\n")
            handle.flush()


def _plain(value: Any) -> Any:
    """Strict-JSON values: tensors to floats, NaN and infinities to the strings "nan", "inf"."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else str(number)
