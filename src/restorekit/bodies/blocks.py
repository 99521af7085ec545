"""Restormer's building blocks, written once and shared by every body and the D-R fusion.

Attribute names follow the official Restormer code (``norm1.body.weight``,
``attn.qkv_dwconv``, ``ffn.project_in``, ``body.0`` in the samplers, ...) so that
released checkpoints load without a translation table.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LAYERNORM_TYPES = ("WithBias", "BiasFree")
_LN_EPS = 1e-5


class _ChannelNorm(nn.Module):
    """The normalisation itself, over the channel axis of an NCHW map.

    ``WithBias`` is a standard LayerNorm over channels. ``BiasFree`` divides by
    the (centred) standard deviation without subtracting the mean and has no
    bias, as in the official code.
    """

    def __init__(self, channels: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, _LN_EPS)
            return y.permute(0, 3, 1, 2)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + _LN_EPS) * self.weight[:, None, None]


class LayerNorm2d(nn.Module):
    """Channel LayerNorm of an NCHW map; ``layernorm_type`` 'WithBias' or 'BiasFree'.

    The parameters sit in a ``body`` submodule, as in the official checkpoints.
    """

    def __init__(self, channels: int, layernorm_type: str = "WithBias") -> None:
        super().__init__()
        if layernorm_type not in LAYERNORM_TYPES:
            raise ValueError(f"layernorm_type must be one of {LAYERNORM_TYPES}, got {layernorm_type!r}")
        self.body = _ChannelNorm(channels, with_bias=layernorm_type == "WithBias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def channel_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, temperature: torch.Tensor
) -> torch.Tensor:
    """Restormer's transposed attention: attention across channels, linear in pixels.

    ``q`` is ``(B, Cq, H, W)``; ``k`` and ``v`` are ``(B, Ck, H, W)``. Per head, q
    and k are L2-normalised over the spatial axis, the ``(Cq/heads, Ck/heads)``
    channel affinities are scaled by ``temperature`` (broadcast to
    ``(heads, 1, 1)``) and soft-maxed, and the result mixes v's channels.
    Returns ``(B, Cq, H, W)``. Self-attention passes q, k, v from one map; a cross
    attention passes q from one map and k, v from another of the same size.
    """
    b, cq, h, w = q.shape
    qh = F.normalize(q.reshape(b, heads, cq // heads, h * w), dim=-1)
    kh = F.normalize(k.reshape(b, heads, k.shape[1] // heads, h * w), dim=-1)
    vh = v.reshape(b, heads, v.shape[1] // heads, h * w)
    attn = (qh @ kh.transpose(-2, -1)) * temperature
    return (attn.softmax(dim=-1) @ vh).reshape(b, cq, h, w)


class TransposedAttention(nn.Module):
    """MDTA: 1x1 + 3x3 depthwise convs make q, k, v; channel attention; 1x1 projection."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        return self.project_out(channel_attention(q, k, v, self.num_heads, self.temperature))


class GatedFFN(nn.Module):
    """GDFN: 1x1 expand to two branches, 3x3 depthwise, GELU gate, 1x1 back."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.66, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """Pre-norm Restormer block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layernorm_type: str = "WithBias",
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim, layernorm_type)
        self.attn = TransposedAttention(dim, num_heads, bias)
        self.norm2 = LayerNorm2d(dim, layernorm_type)
        self.ffn = GatedFFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class BlockStack(nn.Sequential):
    """Blocks in a row; with ``grad_checkpointing`` each is recomputed in backward.

    A plain ``nn.Sequential`` to state dicts (keys ``<stage>.<i>.``), so released
    weights load either way. Checkpointing trades compute for activation memory.
    """

    grad_checkpointing: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return super().forward(x)

        for block in self:
            x = checkpoint(block, x, use_reentrant=False)
        return x


def transformer_stage(
    dim: int,
    num_heads: int,
    depth: int,
    ffn_expansion_factor: float = 2.66,
    bias: bool = False,
    layernorm_type: str = "WithBias",
) -> BlockStack:
    """``depth`` TransformerBlocks in a row (one U-Net level)."""
    return BlockStack(
        *(TransformerBlock(dim, num_heads, ffn_expansion_factor, bias, layernorm_type) for _ in range(depth))
    )


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution from image channels to the first feature width."""

    def __init__(self, in_channels: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution, double the channels: 3x3 conv to C/2, pixel-unshuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1, bias=False),
            nn.PixelUnshuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: 3x3 conv to 2C, pixel-shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels * 2, kernel_size=3, padding=1, bias=False),
            nn.PixelShuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
