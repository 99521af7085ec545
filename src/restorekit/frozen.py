"""Frozen parts in checkpoints and optimizers (what "frozen" means: :func:`restorekit.contracts.is_frozen`).

A frozen module (a pretrained backbone) stays in eval mode, holds no trainable
parameter, and is recorded in checkpoints by name, weights path and sha256
(``weights_record()``) instead of by its tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from restorekit.contracts import frozen_modules, is_pretrained


def frozen_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes (``"backbone."``) of every frozen submodule."""
    return [f"{name}." if name else "" for name, _ in frozen_modules(model)]


def trainable_state_dict(model: nn.Module) -> dict[str, Any]:
    """``model.state_dict()`` without the tensors of frozen submodules."""
    prefixes = frozen_prefixes(model)
    if "" in prefixes:
        return {}
    return {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(prefixes))}


def frozen_records(model: nn.Module) -> dict[str, Any]:
    """Prefix -> ``weights_record()`` of each frozen submodule, for run metadata."""
    return {name: module.weights_record() for name, module in frozen_modules(model)}


def random_frozen_parts(model: nn.Module) -> dict[str, Any]:
    """Prefix -> record of each frozen submodule that runs without pretrained weights."""
    return {name: module.weights_record() for name, module in frozen_modules(model) if not is_pretrained(module)}


def iter_trainable(model: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters the optimizer should see (frozen parts hold none)."""
    return (p for p in model.parameters() if p.requires_grad)


def random_backbone_notes(model: nn.Module) -> list[str]:
    """A line per frozen part that runs without pretrained weights (printed by train, eval, restore)."""
    return [
        f"frozen part '{prefix}' ({record.get('name')}) is RANDOMLY INITIALISED: no "
        f"pretrained weights were given, so its guidance carries no pretrained knowledge. "
        f"Set its 'weights:' in the recipe for real results."
        for prefix, record in random_frozen_parts(model).items()
    ]
