"""A pretrained package folder read back: its manifest, recipe and weights file, checked.

The format :func:`restorekit.pretrained.save_pretrained` writes (see that module);
read here, below the packaging layer, because a package folder is also a
``--weights`` source (:mod:`restorekit.engine.sources`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from restorekit.engine.checkpoint import MODEL_FILE
from restorekit.engine.run_folder import RECIPE_FILE
from restorekit.errors import CheckpointError
from restorekit.frozen import frozen_records
from restorekit.io.weight_files import file_sha256
from restorekit.recipes import load_recipe

MANIFEST_FILE = "restorekit.json"
CARD_FILE = "README.md"
EVAL_FILE = "eval.json"
PACKAGE_FORMAT = "restorekit-package"
PACKAGE_VERSION = 1
WEIGHTS_SHA256 = "weights_sha256"  # manifest field: weights file name -> its sha256


@dataclass
class Package:
    """A package folder read back."""

    folder: Path
    manifest: dict[str, Any]
    recipe: dict[str, Any]

    @property
    def weights_file(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def frozen(self) -> dict[str, Any]:
        return dict(self.manifest.get("frozen") or {})


def is_package(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST_FILE).is_file()


def read_package(folder: str | os.PathLike[str]) -> Package:
    """The manifest and recipe of a package folder; a defect names the folder and the file."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"package {folder}: cannot read {MANIFEST_FILE}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise CheckpointError(f"package {folder}: {MANIFEST_FILE} is not a restorekit package manifest")
    if int(manifest.get("version", 0)) > PACKAGE_VERSION:
        raise CheckpointError(
            f"package {folder} has format version {manifest.get('version')}; this restorekit "
            f"reads up to {PACKAGE_VERSION} (upgrade restorekit)"
        )
    for name in (MODEL_FILE, RECIPE_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"package {folder} has no {name}")
    return Package(folder, manifest, load_recipe(folder / RECIPE_FILE))


def verify_package_weights(package: Package) -> None:
    """Every weights file the manifest records has the recorded sha256 (edited or damaged otherwise).

    A manifest without the field (written before it existed) has nothing to check.
    """
    for name, want in dict(package.manifest.get(WEIGHTS_SHA256) or {}).items():
        path = package.folder / name
        have = file_sha256(path) if path.is_file() else "(missing)"
        if have != want:
            raise CheckpointError(
                f"package {package.folder}: {name} has sha256 {have}, but {MANIFEST_FILE} records {want}: "
                "the weights changed after packaging (edited, or damaged in transfer); to load weights edited "
                "on purpose pass verify_weights=False (--no-verify-weights)"
            )


def check_frozen_parts(model: nn.Module, recorded: Mapping[str, Any], where: str) -> None:
    """Every frozen part the package records is present and holds the recorded weights (sha256)."""
    built = frozen_records(model)
    for prefix, record in recorded.items():
        name = prefix or "model"
        if prefix not in built:
            raise CheckpointError(
                f"{where}: the package records a frozen part {name!r} ({record.get('name')}) "
                "that the model built from its recipe does not have"
            )
        have = built[prefix]
        want_sha, have_sha = record.get("sha256"), have.get("sha256")
        how = f"pass the file: from_pretrained(..., {name}={{'weights': PATH}}) or -o model.{name}.weights=PATH"
        if record.get("weights") is not None and have.get("weights") is None:
            raise CheckpointError(
                f"{where}: frozen part {name!r} ({record.get('name')}) was trained with the weights "
                f"{record.get('weights')} (sha256 {want_sha}), which a package never copies, but here it is "
                f"randomly initialised; {how}"
            )
        if want_sha and have_sha and want_sha != have_sha:
            raise CheckpointError(
                f"{where}: frozen part {name!r} loaded {have.get('weights')} (sha256 {have_sha}), but the model "
                f"was trained with {record.get('weights')} (sha256 {want_sha}); {how}"
            )
