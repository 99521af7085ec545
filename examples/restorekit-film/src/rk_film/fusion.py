"""FiLM fusion: the deepest layer modulates a projection of all layers.

It keeps restorekit's fusion contract: ``FiLMFusion(in_channels, num_layers,
out_channels)`` maps a list of ``num_layers`` maps ``(B, in_channels, h, w)`` to one
``(B, out_channels, h, w)``.
"""

from __future__ import annotations

import torch
from torch import nn


class FiLMFusion(nn.Module):
    def __init__(self, in_channels: int, num_layers: int, out_channels: int = 384) -> None:
        super().__init__()
        self.project = nn.Conv2d(in_channels * num_layers, out_channels, kernel_size=1)
        self.film = nn.Linear(in_channels, 2 * out_channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.project(torch.cat(feats, dim=1))
        scale, shift = self.film(feats[-1].mean(dim=(2, 3))).chunk(2, dim=1)
        return x * (1 + scale[..., None, None]) + shift[..., None, None]
