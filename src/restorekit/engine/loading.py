"""A trained model for evaluation and inference: recipe + weights -> model in eval mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

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


def load_model_for_inference(
    recipe: Mapping[str, Any], weights: str | Path, *, use_ema: bool = True, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Path, list[str]]:
    """(model in eval mode on ``device``, the weights file used, notes on random-init parts)."""
    from restorekit.building import build_model
    from restorekit.engine.train import random_backbone_notes

    file = resolve_weights(weights, use_ema=use_ema)
    if not recipe.get("model"):
        raise CheckpointError("the recipe has no 'model' section to load the weights into")
    model = build_model(recipe["model"])
    load_weights(model, file)
    model = model.to(device).eval()
    return model, file, random_backbone_notes(model)
