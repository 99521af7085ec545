"""A trained model for evaluation and inference: recipe + weights -> model in eval mode.

The weights are anything :mod:`restorekit.engine.sources` resolves (run, checkpoint
and package folders, Hub ids, restorekit and released files), or nothing when the
recipe's model spec loads its own (``-o model.weights=restormer.pth``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from restorekit.engine import checkpoint as ckpt
from restorekit.engine.sources import WeightsSource, build_as_trained, load_source, resolve_source, training_seed
from restorekit.errors import CheckpointError, RecipeError
from restorekit.frozen import random_backbone_notes
from restorekit.recipes import load_recipe, load_yaml

Weights = str | Path | WeightsSource


def recipe_for_weights(weights: Weights | None, recipe: str | None, overrides: Sequence[str] = ()) -> dict:
    """``recipe`` when given, else the recipe of the run folder or package the weights come from."""
    if recipe is not None:
        return load_recipe(recipe, overrides)
    if weights is None:
        raise RecipeError("pass --recipe, or --weights with a run folder or a package")
    source = resolve_source(weights)
    if source.recipe_file is None:
        raise CheckpointError(
            f"--weights {source.given}: not inside a run folder or package (no recipe.yaml found); pass --recipe"
        )
    return load_recipe(source.recipe_file, overrides)


def best_by_ema_note(weights: str | Path, file: Path, *, use_ema: bool) -> str | None:
    """A note when ``--no-ema`` loads the raw weights of a best checkpoint chosen by its EMA's score.

    Training validates the EMA weights (``eval.use_ema``, on by default), so the
    "best" step of a run folder says how good the EMA was there, not the raw weights.
    The raw weights of that step are still loaded (the step is kept, as documented);
    the note says so and how to pick another checkpoint.
    """
    run_dir = Path(weights)
    if use_ema or not run_dir.is_dir() or file.name != ckpt.MODEL_FILE:
        return None
    best = ckpt.read_best(run_dir)
    if not best or file.parent.name != ckpt.ckpt_name(int(best.get("step", -1))):
        return None  # a checkpoint folder, or the newest checkpoint (nothing was scored)
    if not (file.parent / ckpt.EMA_FILE).is_file():
        return None  # no EMA in that run: the raw weights were the ones scored
    recipe_file = run_dir / "recipe.yaml"
    if recipe_file.is_file():
        try:
            section = load_yaml(recipe_file).get("eval")
        except (OSError, ValueError):  # an unreadable recipe: assume the default (EMA scored)
            section = None
        if isinstance(section, dict) and section.get("use_ema", True) is False:
            return None
    score = best.get("score")
    shown = f" ({best.get('metric', 'psnr').upper()} {score:.2f})" if isinstance(score, (int, float)) else ""
    return (
        f"note: --no-ema loads the raw weights of {file.parent}, the best checkpoint of {run_dir} by the "
        f"validation score of its EMA weights{shown}; the raw weights were not scored. Pass a checkpoint "
        f"folder ({run_dir / ckpt.CKPT_DIR}/ckpt-...) to choose another step"
    )


def load_model_for_inference(
    recipe: Mapping[str, Any],
    weights: Weights | None,
    *,
    use_ema: bool = True,
    device: torch.device | str = "cpu",
    verify_weights: bool = True,
) -> tuple[nn.Module, Path, list[str]]:
    """(model in eval mode on ``device``, the weights file used, notes: random-init parts, EMA-chosen best).

    ``weights=None`` uses the weights the recipe's model spec loads itself (``model.weights``).
    ``verify_weights=False``: a package's weights load even when they no longer match its manifest.
    The model is built with the RNG seeded as training seeded it, so a randomly
    initialised frozen part is the one the weights were trained with.
    """
    spec = recipe.get("model")
    if not spec:
        raise CheckpointError("the recipe has no 'model' section to load the weights into")
    if weights is None and not (isinstance(spec, Mapping) and spec.get("weights")):
        raise RecipeError("no weights: pass --weights W, or set the model's own weights (-o model.weights=FILE)")
    source = resolve_source(weights, use_ema=use_ema) if weights is not None else None
    model = build_as_trained(spec, training_seed(recipe))
    if source is not None:
        load_source(model, source, verify_weights=verify_weights)
    model = model.to(device).eval()
    note = best_by_ema_note(source.given, source.file, use_ema=use_ema) if source and source.kind == "run" else None
    file = source.file if source is not None else Path(str(spec["weights"]))
    return model, file, ([note] if note else []) + random_backbone_notes(model)
