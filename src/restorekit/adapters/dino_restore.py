"""D-R (DINO-Restore): adapt the fused guide to one injection point and fuse it in.

Adaption: 3x3 conv (C_f -> C_f), GELU, 1x1 conv (C_f -> C_p), bilinear resize to
the point's resolution. Fusion (knob ``fusion``):

* ``self_attention`` (default; the paper summary's "self-attention"): joint
  self-attention over the adapted guide and the feature. Their concatenation
  (2 C_p channels) is layer-normalised, 1x1 + 3x3 depthwise convs make q, k, v
  (Restormer's MDTA), channel attention mixes the 2 C_p channels, and a
  zero-initialised 1x1 projection maps back to C_p, added to the feature;
* ``cross_attention``: Restormer-style cross attention across channels, q from
  one side (knob ``query``), k and v from the other, with a zero-initialised 1x1
  output projection and a residual (``attention`` is its name in recipes written
  before the self-attention form existed);
* ``concat``: ``feature + conv1x1(concat(feature, guide))``, the conv zero-initialised;
* ``add``: ``feature + guide``, the adaption's last 1x1 conv zero-initialised.

In every type the last layer on the guide branch starts at zero, so an untrained
adapter returns the feature unchanged and the body keeps its behaviour exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restorekit.bodies.blocks import LayerNorm2d, channel_attention

FUSION_TYPES = ("self_attention", "cross_attention", "concat", "add")
QUERY_SIDES = ("guide", "feature")
# Recipes and checkpoints from before the self-attention form call the cross form "attention".
FUSION_ALIASES = {"attention": "cross_attention"}


class GuideAdaption(nn.Module):
    """3x3 conv, GELU, 1x1 conv to the point's channels; resize to the point's size."""

    def __init__(self, guide_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(guide_channels, guide_channels, kernel_size=3, padding=1)
        self.act = nn.GELU()
        self.proj = nn.Conv2d(guide_channels, channels, kernel_size=1)

    def forward(self, guide: Tensor, size: tuple[int, int]) -> Tensor:
        out = self.proj(self.act(self.conv(guide)))
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


class ChannelCrossAttention(nn.Module):
    """Cross attention across channels: q from one map, k and v from the other.

    Both maps are layer-normalised; q comes from a 1x1 + 3x3 depthwise conv, k and
    v from a 1x1 + 3x3 depthwise conv pair on the other side (Restormer's MDTA
    projections), then :func:`channel_attention` with a learnable temperature per
    head. Returns the attended map before any output projection.
    """

    def __init__(self, channels: int, heads: int, bias: bool = False, layernorm_type: str = "WithBias") -> None:
        super().__init__()
        self.heads = heads
        self.norm_q = LayerNorm2d(channels, layernorm_type)
        self.norm_kv = LayerNorm2d(channels, layernorm_type)
        self.q = nn.Conv2d(channels, channels, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels, bias=bias)
        self.kv = nn.Conv2d(channels, channels * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(channels * 2, channels * 2, kernel_size=3, padding=1, groups=channels * 2, bias=bias)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        q = self.q_dwconv(self.q(self.norm_q(query)))
        k, v = self.kv_dwconv(self.kv(self.norm_kv(context))).chunk(2, dim=1)
        return channel_attention(q, k, v, self.heads, self.temperature)


class ChannelSelfAttention(nn.Module):
    """MDTA over one map: LayerNorm, 1x1 + 3x3 depthwise convs to q, k, v, channel attention.

    Returns the attended map (same channels) before any output projection; the
    D-R adapter feeds it the concatenation of the feature and the adapted guide,
    so every channel of either attends to every channel of both.
    """

    def __init__(self, channels: int, heads: int, bias: bool = False, layernorm_type: str = "WithBias") -> None:
        super().__init__()
        self.heads = heads
        self.norm = LayerNorm2d(channels, layernorm_type)
        self.qkv = nn.Conv2d(channels, channels * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(
            channels * 3, channels * 3, kernel_size=3, padding=1, groups=channels * 3, bias=bias
        )
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(self.norm(x))).chunk(3, dim=1)
        return channel_attention(q, k, v, self.heads, self.temperature)


def default_heads(channels: int, head_channels: int) -> int:
    """Heads so each has about ``head_channels`` channels (Restormer: 48 per head).

    The largest divisor of ``channels`` not above ``channels // head_channels``
    (at least 1): 384 -> 8, 192 -> 4, 96 -> 2, 16 -> 1.
    """
    target = max(1, channels // head_channels)
    return next(h for h in range(target, 0, -1) if channels % h == 0)


class DinoRestoreAdapter(nn.Module):
    """D-R adaption + fusion for one injection point.

    Args:
        guide_channels: C_f, channels of the fused guide map.
        channels: C_p, channels of the body's feature at the point.
        fusion: ``self_attention`` (default), ``cross_attention`` (alias
            ``attention``), ``concat`` or ``add``.
        query: which side gives the cross-attention query, ``guide`` (default) or
            ``feature`` (the restoration features); only ``cross_attention`` has one.
        heads: attention heads (``None``: ``default_heads(channels, head_channels)``);
            self-attention splits its 2 C_p channels into the same number of heads.
        head_channels: channels per head when ``heads`` is None.
        bias: biases in the attention convs (Restormer: False).
        layernorm_type: ``WithBias`` or ``BiasFree`` for the two LayerNorms.
    """

    def __init__(
        self,
        guide_channels: int,
        channels: int,
        fusion: str = "self_attention",
        query: str = "guide",
        heads: int | None = None,
        head_channels: int = 48,
        bias: bool = False,
        layernorm_type: str = "WithBias",
    ) -> None:
        super().__init__()
        fusion = FUSION_ALIASES.get(fusion, fusion)
        if fusion not in FUSION_TYPES:
            raise ValueError(f"dino_restore: fusion must be one of {FUSION_TYPES}, got {fusion!r}")
        if query not in QUERY_SIDES:
            raise ValueError(f"dino_restore: query must be one of {QUERY_SIDES}, got {query!r}")
        if query != "guide" and fusion != "cross_attention":
            raise ValueError(
                f"dino_restore: query={query!r} needs fusion='cross_attention' (fusion={fusion!r} has no query)"
            )
        heads = default_heads(channels, head_channels) if heads is None else heads
        if heads < 1 or channels % heads:
            raise ValueError(f"dino_restore: {channels} channels cannot be split into heads={heads}")
        self.fusion_type, self.query, self.heads = fusion, query, heads
        self.adaption = GuideAdaption(guide_channels, channels)
        self.attention: ChannelCrossAttention | ChannelSelfAttention | None = None
        self.project_out: nn.Conv2d | None = None
        if fusion == "self_attention":
            self.attention = ChannelSelfAttention(channels * 2, heads, bias, layernorm_type)
            self.project_out = nn.Conv2d(channels * 2, channels, kernel_size=1, bias=bias)
        elif fusion == "cross_attention":
            self.attention = ChannelCrossAttention(channels, heads, bias, layernorm_type)
            self.project_out = nn.Conv2d(channels, channels, kernel_size=1, bias=bias)
        elif fusion == "concat":
            self.project_out = nn.Conv2d(channels * 2, channels, kernel_size=1, bias=bias)
        for module in self.zero_initialised():
            nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def zero_initialised(self) -> list[nn.Conv2d]:
        """The layers that start at zero (so the untrained adapter is the identity)."""
        return [self.adaption.proj] if self.fusion_type == "add" else [self.project_out]

    def forward(self, feature: Tensor, guide: Tensor) -> Tensor:
        g = self.adaption(guide, tuple(feature.shape[-2:]))
        if self.fusion_type == "add":
            return feature + g
        if self.fusion_type == "concat":
            return feature + self.project_out(torch.cat([feature, g], dim=1))
        if self.fusion_type == "self_attention":
            return feature + self.project_out(self.attention(torch.cat([feature, g], dim=1)))
        query, context = (g, feature) if self.query == "guide" else (feature, g)
        return feature + self.project_out(self.attention(query, context))
