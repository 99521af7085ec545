"""Frozen parts: modules that never train and never enter training checkpoints.

A frozen module (a pretrained backbone) sets ``frozen = True``. It stays in eval
mode, holds no trainable parameter, and is recorded in checkpoints by name,
weights path and sha256 (``weights_record()``) instead of by its tensors.
"""

from __future__ import annotations

from typing import Any, Iterator


def frozen_prefixes(model: Any) -> list[str]:
    """State-dict prefixes (``"backbone."``) of every frozen submodule."""
    return [f"{name}." if name else "" for name, m in model.named_modules() if getattr(m, "frozen", False)]


def trainable_state_dict(model: Any) -> dict[str, Any]:
    """``model.state_dict()`` without the tensors of frozen submodules."""
    prefixes = frozen_prefixes(model)
    if "" in prefixes:
        return {}
    return {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(prefixes))}


def frozen_records(model: Any) -> dict[str, Any]:
    """Prefix -> ``weights_record()`` of each frozen submodule, for run metadata."""
    out = {}
    for name, module in model.named_modules():
        if getattr(module, "frozen", False) and hasattr(module, "weights_record"):
            out[name] = module.weights_record()
    return out


def iter_trainable(model: Any) -> Iterator[Any]:
    """Parameters the optimizer should see (frozen parts excluded)."""
    return (p for p in model.parameters() if p.requires_grad)
