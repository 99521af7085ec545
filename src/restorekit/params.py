"""Parameter counts per part (trainable and frozen), for ``show --params`` and docs."""

from __future__ import annotations

from typing import Any


def count_params(module: Any) -> tuple[int, int]:
    """(trainable, frozen) parameter counts of a torch module."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


def format_param_table(model: Any) -> str:
    """A small table: the model's direct children and the total."""
    rows = [(name, *count_params(child)) for name, child in model.named_children()]
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        rows.append(("(own)", own, 0))
    total = count_params(model)
    lines = [f"{'part':24s} {'trainable':>14s} {'frozen':>14s}"]
    lines += [f"{n:24s} {t:>14,d} {f:>14,d}" for n, t, f in rows]
    lines.append(f"{'total':24s} {total[0]:>14,d} {total[1]:>14,d}")
    return "\n".join(lines)
