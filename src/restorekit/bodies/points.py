"""Injection points: where a body accepts guidance (no torch here, so it imports light)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InjectionPoint:
    """A named place in a body's forward where guidance may replace the feature.

    ``channels`` is the feature's channel count; ``stride`` its down-sampling
    factor relative to the padded input (a multiple of 8), so the feature is
    ``(B, channels, Hp // stride, Wp // stride)``.
    """

    channels: int
    stride: int
