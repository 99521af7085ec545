"""Channel cross attention: Restormer's transposed attention with q from one map, k and v from another.

AdaIR (``Chanel_Cross_Attention``) and MoCE-IR (``CrossAttention``) use the same
module with the official attribute names; only the depthwise kernel on k and v
differs (3 in AdaIR, 7 in MoCE-IR).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from restorekit.bodies.blocks import channel_attention


class ChannelCrossAttention(nn.Module):
    """q from ``x`` (1x1 + 3x3 depthwise), k and v from ``y`` (1x1 + ``kv_kernel`` depthwise)."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False, kv_kernel: int = 3) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(
            dim * 2, dim * 2, kernel_size=kv_kernel, padding=kv_kernel // 2, groups=dim * 2, bias=bias
        )
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"cross attention needs maps of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(y)).chunk(2, dim=1)
        return self.project_out(channel_attention(q, k, v, self.num_heads, self.temperature))
