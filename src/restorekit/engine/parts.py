"""What a recipe trains, built through the registries: model, loss, optimizer, schedule.

The trainer and the benchmarks build through these functions, so a benchmark
measures exactly what ``restorekit train`` runs and a plugin can supply any part.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from restorekit.building import build, build_model, split_spec
from restorekit.contracts import BindsToModel, GuidedModel, Schedule, is_frozen, sparse_gradient_prefixes
from restorekit.engine.config import TrainConfig, build_schedule
from restorekit.engine.sources import load_source, resolve_source
from restorekit.errors import RecipeError
from restorekit.frozen import iter_trainable

DEFAULT_LOSS: dict[str, Any] = {"type": "l1"}


@dataclass
class TrainingParts:
    """The parts one run trains with."""

    model: nn.Module
    loss_fn: nn.Module
    loss_name: str  # the recipe's loss type: a plain scalar loss is logged under it
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: Schedule


def build_model_and_loss(
    model_spec: Mapping[str, Any], loss_spec: Any = None, device: torch.device | str = "cpu", bind: bool = True
) -> tuple[nn.Module, nn.Module]:
    """The model and its loss, the loss bound to the model (a bound DPC shares its backbone).

    ``bind=False`` leaves the loss unbound (a benchmark lever measures what sharing saves).
    """
    model = build_model(model_spec).to(device)
    loss_fn = build("loss", loss_spec or DEFAULT_LOSS)
    if bind and isinstance(loss_fn, BindsToModel):  # first: a bound loss lets go of parts it will not use
        loss_fn.bind(model)
    if isinstance(loss_fn, nn.Module):
        loss_fn = loss_fn.to(device)
    return model, loss_fn


def build_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """``train.optimizer`` over ``params`` at ``train.lr``."""
    return build("optimizer", cfg.optimizer, params=params, lr=cfg.lr)


def build_training_parts(
    recipe: Mapping[str, Any], cfg: TrainConfig, device: torch.device | str = "cpu", source: str = "recipe"
) -> TrainingParts:
    """Everything :class:`~restorekit.engine.train.Trainer` trains with, for a resolved recipe."""
    if not recipe.get("model"):
        raise RecipeError(f"{source}: the recipe has no 'model' section")
    model, loss_fn = build_model_and_loss(recipe["model"], recipe.get("loss"), device)
    if cfg.init_weights:
        load_source(model, resolve_source(cfg.init_weights))  # a resumed checkpoint loads over it
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = list(iter_trainable(model))
    if not params:
        raise RecipeError(f"{source}: the model has no trainable parameters")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the recipe check already warned about this schedule, naming the file
        schedule = build_schedule(cfg, source)
    optimizer = build_optimizer(cfg, params)
    return TrainingParts(model, loss_fn, loss_type(recipe.get("loss")), params, optimizer, schedule)


def loss_type(loss_spec: Any) -> str:
    """The type a loss spec names (``l1`` by default)."""
    return split_spec("loss", loss_spec or DEFAULT_LOSS)[0]


def has_unused_parameters(model: nn.Module) -> bool:
    """Whether DDP must look for parameters without a gradient.

    A backbone fine-tuned in place (not frozen) has parameters past the deepest
    layer used (its last blocks, its final norm) that never get one; a routed
    expert no image chose gets none on that step (MoCE-IR).
    """
    if isinstance(model, GuidedModel) and not is_frozen(model.backbone):
        return True
    return bool(sparse_gradient_prefixes(model))
