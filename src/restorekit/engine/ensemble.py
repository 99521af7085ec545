"""Test-time x8 self-ensemble: the model on the 8 flips and rotations of its input, averaged.

Each of the 8 elements of the dihedral group D4 (rotations by 0, 90, 180, 270
degrees, each with and without a horizontal flip) is applied to the input, the
model restores it, the inverse maps the output back, and the 8 outputs are
averaged in float32. Eight forward passes, one at a time (memory as for one).
Wrapped around a model it works everywhere a model does: whole images, every
tile of a tiled restore, evaluation.
"""

from __future__ import annotations

import torch
from torch import nn

TRANSFORMS = 8


def transform(x: torch.Tensor, index: int) -> torch.Tensor:
    """Element ``index`` (0..7) of D4 on the last two dimensions: rotate ``index % 4`` quarter turns, flip when >= 4."""
    x = torch.rot90(x, index % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if index >= 4 else x


def inverse(x: torch.Tensor, index: int) -> torch.Tensor:
    """Undo :func:`transform` ``index``."""
    if index >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, -(index % 4), dims=(-2, -1))


class SelfEnsemble(nn.Module):
    """``model`` averaged over the 8 flips and rotations of its input (x8 self-ensemble)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for index in range(TRANSFORMS):
            out = inverse(self.model(transform(x, index)), index).float()
            total = out if total is None else total + out
        return (total / TRANSFORMS).to(x.dtype)
