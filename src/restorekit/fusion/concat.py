"""Concatenation fusion: the MSF ablation without gate or experts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ConcatFusion(nn.Module):
    """``concat(F_1..F_L)`` along channels, then one 1x1 conv to ``out_channels``.

    Same interface as :class:`~restorekit.fusion.msf.MultiLayerSemanticFusion`
    (``last_gate`` and ``aux_loss`` exist and stay ``None``), so models and losses
    never branch on the fusion type.
    """

    def __init__(self, in_channels: int, num_layers: int, out_channels: int = 384, bias: bool = True) -> None:
        super().__init__()
        self.in_channels, self.num_layers, self.out_channels = in_channels, num_layers, out_channels
        self.proj = nn.Conv2d(in_channels * num_layers, out_channels, kernel_size=1, bias=bias)
        self.last_gate: Tensor | None = None
        self.aux_loss: Tensor | None = None

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return self.proj(torch.cat(check_layer_maps(feats, self.num_layers, self.in_channels), dim=1))


def check_layer_maps(feats: Sequence[Tensor], num_layers: int, in_channels: int) -> list[Tensor]:
    """The layer maps as a list, after checking their count and channels."""
    feats = list(feats)
    if len(feats) != num_layers:
        raise ValueError(f"fusion expects {num_layers} layer maps, got {len(feats)}")
    for i, f in enumerate(feats):
        if f.dim() != 4 or f.shape[1] != in_channels:
            raise ValueError(f"fusion layer map {i} must be (B, {in_channels}, h, w), got {tuple(f.shape)}")
    return feats
