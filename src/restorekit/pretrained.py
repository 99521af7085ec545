"""Pretrained packages: a trained model as a folder to share, and a model again from one.

A package folder holds

* ``recipe.yaml``: the resolved recipe the model was trained with;
* ``model.safetensors``: its trainable weights. A frozen part (the DINOv2 backbone)
  is never copied: ``restorekit.json`` records it by name, weights and sha256, and
  it loads from its own source (the recipe's ``weights:``, or one passed when
  loading), checked against that sha256;
* ``restorekit.json``: the manifest (format, versions, where the weights came from,
  the sha256 of every weights file in the folder, frozen parts, parameter counts,
  licence, citation);
* ``README.md``: the model card (:mod:`restorekit.model_card`), from ``run.json``
  and ``eval.json``;
* ``eval.json``: the evaluation the card's table shows, when there was one.

``save_pretrained(run_or_model, folder)`` writes one; ``from_pretrained(folder or
Hub id)`` (also ``build_model(folder)``) builds the model, checks the weights files
against their sha256 (``verify_weights=False`` for weights edited on purpose; a manifest
written before the field existed has nothing to check against and loads as before),
checks the frozen parts and loads the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save
from torch import nn

from restorekit.deprecation import deprecated_names
from restorekit.engine import checkpoint as ckpt
from restorekit.engine.checkpoint import FILE_FORMAT, MODEL_FILE, cpu_copy
from restorekit.engine.packages import (
    CARD_FILE,
    EVAL_FILE,
    MANIFEST_FILE,
    PACKAGE_FORMAT,
    PACKAGE_VERSION,
    WEIGHTS_SHA256,
    Package,
    check_frozen_parts,
    is_package,
    read_package,
    verify_package_weights,
)
from restorekit.engine.run_folder import RECIPE_FILE, RUN_FILE, versions
from restorekit.engine.sources import build_as_trained, load_source, package_source, training_seed
from restorekit.errors import CheckpointError
from restorekit.frozen import frozen_records, trainable_state_dict
from restorekit.hub import HUB_PREFIX, download_package, is_hub_id
from restorekit.io.atomic import AppearedMeanwhile, publish_dir
from restorekit.io.outputs import OutputExistsError, check_output_folder
from restorekit.io.state_dict import read_state_file
from restorekit.model_card import render_card
from restorekit.params import count_params
from restorekit.recipes import dump_recipe, load_recipe, merge

__all__ = [
    "CARD_FILE", "EVAL_FILE", "MANIFEST_FILE", "PACKAGE_FORMAT", "PACKAGE_VERSION", "WEIGHTS_SHA256", "Package",
    "check_frozen_parts", "from_pretrained", "is_package", "package_folder", "package_source", "read_package",
    "save_pretrained", "verify_package_weights",
]  # fmt: skip


def package_folder(source: str | os.PathLike[str]) -> Path:
    """A local package folder, or the Hub package ``source`` names (downloaded or cached)."""
    text = str(source)
    path = Path(os.path.expanduser(text))
    if is_package(path):
        return path
    if path.exists():
        raise CheckpointError(f"{text} is not a restorekit package (no {MANIFEST_FILE})")
    if text.startswith(HUB_PREFIX) or is_hub_id(text):
        return download_package(text)
    raise CheckpointError(f"{text}: no such package folder, and not a Hub id (org/name)")


# -- loading -------------------------------------------------------------------------
def from_pretrained(
    source: str | os.PathLike[str], *, device: Any = "cpu", verify_weights: bool = True, **overrides: Any
) -> nn.Module:
    """The model of a package folder or Hub id, in eval mode on ``device``.

    ``overrides`` merge onto the package's model spec with the recipe rules; the
    usual one says where a frozen part's weights are on this machine:
    ``from_pretrained(dir, backbone={"weights": "/data/dinov2_vitb14_pretrain.pth"})``.
    ``verify_weights=False`` loads weights files that no longer match the sha256 the
    manifest records (edited on purpose).
    """
    folder = package_folder(source)
    package = read_package(folder)
    spec = merge(package.recipe["model"], overrides) if overrides else package.recipe["model"]
    model = build_as_trained(spec, training_seed(package.recipe))
    load_source(model, package_source(str(source), folder, "package"), verify_weights=verify_weights)
    model.pretrained_recipe = {**package.recipe, "model": spec}  # what save_pretrained(model) writes back
    return model.to(device).eval()


# -- writing -------------------------------------------------------------------------
def save_pretrained(
    model_or_run: nn.Module | str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    recipe: Mapping[str, Any] | str | None = None,
    use_ema: bool = True,
    license: str | None = None,  # noqa: A002 - the model card's field name
    citation: str | None = None,
    evaluation: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a package of a run folder (its best weights) or of a model.

    A model built by ``build_model`` or ``build`` carries its spec (``model.spec``),
    which becomes the package's recipe; ``recipe=`` overrides it.

    ``evaluation`` is an ``eval.json`` (path or content) for the card's table; a run's
    own ``eval/eval.json`` is used when none is given.
    """
    folder = Path(folder)
    _check_target(folder, overwrite)
    check_output_folder(folder, "package folder")
    if isinstance(model_or_run, nn.Module):
        state, full_recipe, facts = _from_model(model_or_run, recipe)
    else:
        state, full_recipe, facts = _from_run(Path(model_or_run), use_ema)
    report = _evaluation(evaluation, facts.pop("run_eval", None))
    manifest = _manifest(full_recipe, facts, license, citation)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    try:
        _write_files(tmp, state, full_recipe, manifest, report, render_card(manifest, full_recipe, report))
        publish_dir(tmp, folder, replace=overwrite)  # without overwrite: never onto a package written meanwhile
    except AppearedMeanwhile as exc:
        raise OutputExistsError(f"package folder {folder} {exc.strerror}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _check_target(folder: Path, overwrite: bool) -> None:
    taken = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    if taken and not overwrite:
        raise OutputExistsError(
            f"package folder {folder} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    if taken and not is_package(folder):
        raise OutputExistsError(f"{folder} is not empty and not a package: refusing to replace it")


def _from_model(model: nn.Module, recipe: Mapping[str, Any] | str | None) -> tuple[dict, dict, dict]:
    if recipe is None:
        recipe = getattr(model, "pretrained_recipe", None)
    if recipe is None and isinstance(getattr(model, "spec", None), Mapping):
        recipe = {"model": dict(model.spec)}  # the spec build() kept on the model
    if recipe is None:
        raise CheckpointError(
            f"save_pretrained(model, ...): this {type(model).__name__} was not built by restorekit.build_model "
            "or build (it carries no spec); pass recipe= (the recipe or model spec it was built from), "
            "or a run folder instead of the model"
        )
    full = load_recipe(recipe) if isinstance(recipe, (str, os.PathLike)) else dict(recipe)
    if "model" not in full:
        full = {"model": full}
    trainable, frozen = count_params(model)
    facts = {"weights": {"source": "model"}, "frozen": frozen_records(model),
             "params": {"trainable": trainable, "frozen": frozen}}  # fmt: skip
    return dict(trainable_state_dict(model)), full, facts


def _from_run(run_dir: Path, use_ema: bool) -> tuple[dict, dict, dict]:
    if not (run_dir / RECIPE_FILE).is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no {RECIPE_FILE}); pass a model and recipe= instead")
    file = ckpt.resolve_weights(run_dir, use_ema=use_ema, what="RUN")
    run = _read_json(run_dir / RUN_FILE)
    meta = _read_json(file.parent / ckpt.META_FILE)
    weights = {"source": str(run_dir), "checkpoint": file.parent.name, "step": meta.get("step"),
               "ema": file.name == ckpt.EMA_FILE}  # fmt: skip
    facts = {"weights": weights, "frozen": run.get("frozen", meta.get("frozen", {})),
             "params": run.get("params", {}), "run_eval": run_dir / "eval" / EVAL_FILE}  # fmt: skip
    state = read_state_file(file, what="weights file", released=False).state
    return state, load_recipe(run_dir / RECIPE_FILE), facts


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _evaluation(given: Any, run_eval: Path | None) -> dict[str, Any] | None:
    if isinstance(given, Mapping):
        return dict(given)
    path = Path(given) if given is not None else run_eval
    if path is None or not path.is_file():
        if given is not None:
            raise CheckpointError(
                f"evaluation report {given} does not exist (an eval.json from `restorekit eval --report DIR`)"
            )
        return None
    report = _read_json(path)
    if not isinstance(report.get("tasks"), Mapping):
        raise CheckpointError(f"evaluation report {path} has no per-task results ('tasks')")
    return report


def _manifest(
    recipe: Mapping[str, Any],
    facts: Mapping[str, Any],
    license: str | None,  # noqa: A002
    citation: str | None,
) -> dict[str, Any]:
    model = recipe.get("model") or {}
    return {
        "format": PACKAGE_FORMAT, "version": PACKAGE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "name": recipe.get("name"), "model_type": model.get("type") if isinstance(model, Mapping) else None,
        "versions": versions(), "license": license, "citation": citation, **facts,
    }  # fmt: skip


def _write_files(
    tmp: Path,
    state: Mapping[str, Any],
    recipe: Mapping[str, Any],
    manifest: Mapping[str, Any],
    report: Mapping[str, Any] | None,
    card: str,
) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    # safetensors' save_file creates its file 0600; written here, it follows the umask like the others.
    weights = save(cpu_copy(state), metadata={"format": FILE_FORMAT, "package": str(PACKAGE_VERSION)})
    (tmp / MODEL_FILE).write_bytes(weights)
    manifest = {**manifest, WEIGHTS_SHA256: {MODEL_FILE: hashlib.sha256(weights).hexdigest()}}
    (tmp / RECIPE_FILE).write_text(dump_recipe(recipe), encoding="utf-8")
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    if report is not None:
        (tmp / EVAL_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (tmp / CARD_FILE).write_text(card, encoding="utf-8")


# A package's weights file is a checkpoint's model file: one name (MODEL_FILE) since 0.2; removed in 0.3.
__getattr__ = deprecated_names(__name__, {"WEIGHTS_FILE": ("restorekit.engine.checkpoint.MODEL_FILE", MODEL_FILE)})
