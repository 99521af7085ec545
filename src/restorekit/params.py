"""Parameter counts per part (trainable and frozen), for ``show --params`` and docs."""

from __future__ import annotations

from typing import Any


def count_params(module: Any) -> tuple[int, int]:
    """(trainable, frozen) parameter counts of a torch module."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


def part_rows(model: Any) -> list[tuple[str, int, int]]:
    """(part, trainable, frozen) of each direct child of the model, and of its own parameters."""
    rows = [(name, *count_params(child)) for name, child in model.named_children()]
    own = list(model.parameters(recurse=False))
    if own:
        rows.append(
            (
                "(own)",
                sum(p.numel() for p in own if p.requires_grad),
                sum(p.numel() for p in own if not p.requires_grad),
            )
        )
    return rows


def param_table(rows: list[tuple[str, int, int]], total: tuple[int, int]) -> str:
    """The rows of :func:`part_rows` and the total as a small text table."""
    lines = [f"{'part':24s} {'trainable':>14s} {'frozen':>14s}"]
    lines += [f"{n:24s} {t:>14,d} {f:>14,d}" for n, t, f in rows]
    lines.append(f"{'total':24s} {total[0]:>14,d} {total[1]:>14,d}")
    return "\n".join(lines)


def format_param_table(model: Any) -> str:
    """A small table: the model's direct children and the total."""
    return param_table(part_rows(model), count_params(model))
