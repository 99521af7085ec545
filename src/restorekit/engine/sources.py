"""Where ``--weights`` come from, and how each kind enters a model.

``--weights W`` (``eval``, ``restore``, ``export``, ``train``'s initialisation) is

* a **run folder**: its best checkpoint (else the newest), EMA weights unless ``--no-ema``;
* a **checkpoint folder** (``checkpoints/ckpt-00000100``);
* a **pretrained package** folder (``restorekit package`` / ``save_pretrained``);
* a **Hub id** (``org/name`` or ``hf:org/name``): a package on the Hugging Face Hub;
* a **weights file** restorekit wrote (``.safetensors`` whose metadata says so): the
  model's trainable keys exactly;
* a **released file**: the Restormer ``.pth`` (``{"params": ...}``), the PromptIR
  Lightning ``.ckpt`` (``{"state_dict": {"net.": ...}}``), or any plain state dict,
  read once through :func:`restorekit.io.state_dict.read_state_file` and loaded through
  :func:`~restorekit.io.state_dict.load_state_file` (for a body model, the official unused
  modules are accepted).

A run folder and a package also name the recipe that goes with the weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from restorekit.bodies.base import UNetBody
from restorekit.bodies.weights import body_hint
from restorekit.building import build_model
from restorekit.engine import checkpoint as ckpt
from restorekit.engine.packages import check_frozen_parts, is_package, read_package, verify_package_weights
from restorekit.engine.run_folder import RECIPE_FILE
from restorekit.errors import CheckpointError
from restorekit.frozen import trainable_state_dict
from restorekit.hub import HUB_PREFIX, download_package, is_hub_id
from restorekit.io.state_dict import StateFile, load_state_file, read_state_file


@dataclass(frozen=True)
class WeightsSource:
    """A resolved ``--weights`` value."""

    given: str  # what the user wrote
    kind: str  # run | checkpoint | package | hub | file | released
    file: Path  # the weights file to load
    recipe_file: Path | None  # the recipe that goes with it (run folder, package), if any
    package: Path | None = None  # the package folder, for package and hub sources

    @property
    def released(self) -> bool:
        return self.kind == "released"


def is_restorekit_file(path: Path) -> bool:
    """Whether ``path`` is a safetensors file restorekit wrote (checkpoint or package weights)."""
    if path.suffix != ".safetensors":
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == ckpt.FILE_FORMAT
    except Exception:  # noqa: BLE001 - unreadable: the reader names the problem later
        return False


def resolve_source(given: str | os.PathLike[str] | WeightsSource, *, use_ema: bool = True) -> WeightsSource:
    """What ``--weights given`` names (a download for a Hub id); errors name ``given``."""
    if isinstance(given, WeightsSource):
        return given
    text = str(given)
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        if is_package(path):
            return package_source(text, path, "package")
        file = ckpt.resolve_weights(path, use_ema=use_ema)
        kind = "checkpoint" if file.parent == path else "run"  # a checkpoint folder holds the file itself
        return WeightsSource(text, kind, file, recipe_of(file))
    if path.is_file():
        kind = "file" if is_restorekit_file(path) else "released"
        return WeightsSource(text, kind, path, recipe_of(path) if kind == "file" else None)
    if text.startswith(HUB_PREFIX) or (is_hub_id(text) and not path.parent.is_dir()):  # not a mistyped path
        return package_source(text, download_package(text), "hub")
    raise CheckpointError(
        f"--weights {text}: no such file or folder (expected a run or checkpoint folder, a package folder, "
        "a .safetensors file, a released .pth/.ckpt, or a Hub id org/name)"
    )


def recipe_of(weights: Path) -> Path | None:
    """The ``recipe.yaml`` of the run folder (or package) ``weights`` lies in, if any."""
    run_dir = ckpt.run_dir_of(weights.resolve())
    return run_dir / "recipe.yaml" if run_dir is not None else None


def package_source(given: str, folder: Path, kind: str) -> WeightsSource:
    """A package folder as a ``--weights`` source."""
    package = read_package(folder)
    return WeightsSource(given, kind, package.weights_file, folder / RECIPE_FILE, package=folder)


def load_source(model: nn.Module, source: WeightsSource, *, verify_weights: bool = True) -> StateFile:
    """Load ``source`` into ``model`` (strictly; a misfit names the file and the keys); the file is read once.

    A file that is not restorekit's is first taken as a plain state dict of this model
    (its keys exactly the model's trainable ones); only otherwise is it unwrapped and
    stripped as a released file. A package's weights files are checked against the
    sha256 its manifest records unless ``verify_weights`` is off. Returns the file as read.
    """
    if source.package is not None:
        package = read_package(source.package)
        if verify_weights:
            verify_package_weights(package)
        check_frozen_parts(model, package.frozen, source.given)
    read = read_state_file(source.file, what="weights file", released=source.released)
    targets = trainable_state_dict(model)
    if not source.released or read.exact.keys() == targets.keys():
        load_state_file(model, read.as_exact(), targets=targets, architecture="the model")
    elif isinstance(model, UNetBody):
        load_state_file(
            model, read, architecture=model.describe(), ignorable=model.unused_official_modules, hint=body_hint
        )
    else:
        load_state_file(model, read, targets=targets, architecture=type(model).__name__, hint=_released_hint)
    return read


def _released_hint(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    if missing and any(k.startswith("body.") for k in missing):
        return (
            "a released body file (Restormer .pth; PromptIR, AdaIR, MoCE-IR .ckpt) goes into a guided model's body: "
            "set model.body.weights=FILE instead of --weights"
        )
    return ""


def build_as_trained(spec: Mapping[str, Any], seed: int | None) -> nn.Module:
    """Build ``spec`` with the RNG seeded as training seeded it before building.

    A frozen part without pretrained weights (a randomly initialised backbone) is
    not saved; seeding exactly as the trainer does rebuilds the same tensors. The
    caller's RNG state is left as it was.
    """
    if seed is None:
        return build_model(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_model(spec)


def training_seed(recipe: Mapping[str, Any]) -> int:
    """The seed the trainer built this recipe's model with (``train.seed``, 0 by default)."""
    train = recipe.get("train") or {}
    return int(train.get("seed", 0)) if isinstance(train, Mapping) else 0
