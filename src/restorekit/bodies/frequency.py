"""AdaIR's frequency mining and modulation (Cui et al., ICLR 2025), with the official names.

A :class:`FreModule` (the paper's AFLB) takes the input image, resized to a decoder
feature, splits a 3x3 convolution of it into a low and a high frequency band, lets
each band attend to the feature (channel cross attention), mixes the two bands
(:class:`FreRefine`, the paper's FMoM) and adds the result to the feature with a
learned scale (``para1``, zero at the start) beside ``para2 * feature``.

The low band keeps a centred square of the spectrum whose half side is
``int((side // 128) * t)`` with ``t`` from ``rate_conv``; the official code turns
it into an integer, so ``rate_conv`` never receives a gradient, and below 128
pixels a side (every 128 px training crop, at every level) the low band is empty.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from restorekit.bodies.cross_attention import ChannelCrossAttention

BAND_UNIT = 128  # the official ``n``: the low band's half side is (side // 128) * t pixels


class SpatialGate(nn.Module):
    """H-L unit: a per-pixel weight from the channel max and mean (7x7 convolution, sigmoid)."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([torch.max(x, dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial(pooled))


class ChannelGate(nn.Module):
    """L-H unit: a per-channel weight from global average and max pooling through one MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, dim // 16, 1, bias=False), nn.ReLU(), nn.Conv2d(dim // 16, dim, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        peak = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + peak)


class FreRefine(nn.Module):
    """FMoM: the high band weights the low band per pixel, the low band the high band per channel."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.SpatialGate = SpatialGate()  # noqa: N815 - the official attribute name (checkpoint keys)
        self.ChannelGate = ChannelGate(dim)  # noqa: N815
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.proj(low * self.SpatialGate(high) + high * self.ChannelGate(low))


class FreModule(nn.Module):
    """AFLB at one decoder level of ``dim`` channels; ``forward(image, feature)``.

    ``conv`` and ``score_gen`` are built and saved by the official model but never
    used, and ``rate_conv`` gets no gradient (see the module docstring): all three
    are kept as non-trainable parameters, so released weights load strictly and
    the parameter count is the official one, while training stays exactly the
    official training (AdamW skips parameters without gradients).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False, in_dim: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, dim, kernel_size=3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(in_dim, dim, kernel_size=3, padding=1, bias=False)
        self.score_gen = nn.Conv2d(2, 2, 7, padding=3)
        self.para1 = nn.Parameter(torch.zeros(dim, 1, 1))
        self.para2 = nn.Parameter(torch.ones(dim, 1, 1))
        self.channel_cross_l = ChannelCrossAttention(dim, num_heads, bias)
        self.channel_cross_h = ChannelCrossAttention(dim, num_heads, bias)
        self.channel_cross_agg = ChannelCrossAttention(dim, num_heads, bias)
        self.frequency_refine = FreRefine(dim)
        self.rate_conv = nn.Sequential(
            nn.Conv2d(dim, dim // 8, 1, bias=False), nn.GELU(), nn.Conv2d(dim // 8, 2, 1, bias=False)
        )
        for unused in (self.conv, self.score_gen, self.rate_conv):
            unused.requires_grad_(False)

    def forward(self, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(image, size=y.shape[-2:], mode="bilinear", align_corners=False)
        high, low = self.bands(self.conv1(x))
        high = self.channel_cross_l(high, y)
        low = self.channel_cross_h(low, y)
        out = self.channel_cross_agg(y, self.frequency_refine(low, high))
        return out * self.para1 + y * self.para2

    def bands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(high, low): magnitudes of ``x`` outside and inside the adaptive low-frequency square."""
        h, w = x.shape[-2:]
        if h < BAND_UNIT or w < BAND_UNIT:  # the square is empty for every image
            return x.abs(), torch.zeros_like(x)
        threshold = torch.sigmoid(self.rate_conv(F.adaptive_avg_pool2d(x, 1)))
        half_h = (h // BAND_UNIT * threshold[:, 0:1]).int()  # (B, 1, 1, 1)
        half_w = (w // BAND_UNIT * threshold[:, 1:2]).int()
        # The official square is centred on the shifted spectrum; unshifted it sits at the corners.
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        in_rows = (rows < half_h) | (rows >= h - half_h)
        in_cols = (cols < half_w) | (cols >= w - half_w)
        spectrum = torch.fft.fft2(x.float(), norm="forward")
        low = torch.fft.ifft2(spectrum * (in_rows & in_cols), norm="forward")
        high = x.float() - low  # ifft2(spectrum * (1 - mask)), by linearity
        return high.abs().to(x.dtype), low.abs().to(x.dtype)
