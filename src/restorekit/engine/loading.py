"""A trained model for evaluation and inference: recipe + weights -> model in eval mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from restorekit.engine import checkpoint as ckpt
from restorekit.engine.checkpoint import load_weights, resolve_weights, run_dir_of
from restorekit.errors import CheckpointError


def recipe_for_weights(weights: str | Path, recipe: str | None, overrides: Sequence[str] = ()) -> dict:
    """``recipe`` when given, else the ``recipe.yaml`` of the run folder the weights lie in."""
    from restorekit.recipes import load_recipe

    if recipe is not None:
        return load_recipe(recipe, overrides)
    run_dir = run_dir_of(Path(weights).resolve())
    if run_dir is None:
        raise CheckpointError(
            f"--weights {weights}: not inside a run folder (no recipe.yaml found); pass --recipe"
        )
    return load_recipe(run_dir / "recipe.yaml", overrides)


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
        from restorekit.recipes import load_yaml

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
    recipe: Mapping[str, Any], weights: str | Path, *, use_ema: bool = True, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Path, list[str]]:
    """(model in eval mode on ``device``, the weights file used, notes: random-init parts, EMA-chosen best)."""
    from restorekit.building import build_model
    from restorekit.frozen import random_backbone_notes

    file = resolve_weights(weights, use_ema=use_ema)
    if not recipe.get("model"):
        raise CheckpointError("the recipe has no 'model' section to load the weights into")
    model = build_model(recipe["model"])
    load_weights(model, file)
    model = model.to(device).eval()
    note = best_by_ema_note(weights, file, use_ema=use_ema)
    return model, file, ([note] if note else []) + random_backbone_notes(model)
