"""What every U-Net body shares: its knobs, padding to a multiple of 8, dtype, guidance, weights.

A body implements ``_forward_padded(x, inject)`` and ``_encode_padded(x)`` on an
input whose sides are multiples of 8; :class:`UNetBody` pads, casts and crops
around them, checks the guidance mapping and loads released weights. Its
constructor starts with :meth:`UNetBody._set_residual` and ends with
:meth:`UNetBody._finish`; the Restormer family passes the shared knobs on as one
:class:`UNetKnobs`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from restorekit.bodies.blocks import LAYERNORM_TYPES, BlockStack
from restorekit.bodies.points import InjectionPoint
from restorekit.bodies.weights import body_hint
from restorekit.errors import BuildError
from restorekit.io.padding import PAD_MULTIPLE, pad_to_multiple
from restorekit.io.state_dict import LoadReport, load_state_file

Guidance = Mapping[str, Callable[[torch.Tensor], torch.Tensor]]
Inject = Callable[[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class UNetKnobs:
    """The knobs every Restormer-style body takes, under its constructor's names (one list, here)."""

    in_channels: int
    out_channels: int
    dim: int
    num_blocks: Sequence[int]
    heads: Sequence[int]
    num_refinement_blocks: int
    ffn_expansion_factor: float
    bias: bool
    layernorm_type: str

    @classmethod
    def of(cls, arguments: Mapping[str, Any]) -> UNetKnobs:
        """The knobs among a body constructor's arguments (its ``locals()``, taken first thing)."""
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls)})

    def config(self, **extra: Any) -> dict[str, Any]:
        """The body's ``config`` (named in messages): the layout knobs, then ``extra``."""
        return dict(dim=self.dim, num_blocks=list(self.num_blocks), heads=list(self.heads),
                    layernorm_type=self.layernorm_type, **extra)  # fmt: skip


class UNetBody(nn.Module):
    """Base of the restoration bodies (see ``docs/interfaces.md``, section body)."""

    architecture = "body"  # named in checkpoint errors
    pad_multiple = PAD_MULTIPLE  # inputs are padded to this; a guide must cover the same pixels
    # Modules an official release saves but its forward never uses: accepted when loading.
    unused_official_modules: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._points: dict[str, InjectionPoint] = {}
        self.global_residual = False
        self.config: dict[str, Any] = {}

    def _set_residual(self, global_residual: bool, in_channels: int, out_channels: int) -> None:
        """The global residual (``out + x``), which needs as many output channels as input ones."""
        if global_residual and in_channels != out_channels:
            raise BuildError(
                f"{self.architecture}: global_residual needs in_channels == out_channels, "
                f"got {in_channels} and {out_channels}"
            )
        self.global_residual = bool(global_residual)

    def _finish(self, grad_checkpointing: bool, weights: str | os.PathLike[str] | None) -> None:
        """The end of every body's constructor: checkpointing switched, then the weights loaded."""
        self.set_grad_checkpointing(grad_checkpointing)
        if weights is not None:
            self.load_weights(weights)

    # -- contract ---------------------------------------------------------------
    @property
    def injection_points(self) -> dict[str, InjectionPoint]:
        """Point name -> InjectionPoint(channels, stride), in forward order."""
        return dict(self._points)

    def forward(self, x: torch.Tensor, guidance: Guidance | None = None) -> torch.Tensor:
        """Restore ``x`` (B, C, H, W), any H and W; ``guidance`` maps points to callables."""
        self._check_guidance(guidance)
        height, width = x.shape[-2:]
        padded = pad_to_multiple(self._cast_in(x), self.pad_multiple)
        out = self._forward_padded(padded, self._injector(guidance))
        return out[..., :height, :width].to(x.dtype)

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder outputs per level (``level1`` .. ``level4``) of the padded input."""
        return self._encode_padded(pad_to_multiple(self._cast_in(x), self.pad_multiple))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute transformer blocks in backward (less memory, ~30% more compute)."""
        for module in self.modules():
            if isinstance(module, BlockStack):
                module.grad_checkpointing = bool(enable)

    def load_weights(self, path: str | os.PathLike[str], key: str | None = None) -> LoadReport:
        """Load a released or saved weights file (see :mod:`restorekit.bodies.weights`)."""
        return load_state_file(
            self, path, architecture=self.describe(), ignorable=self.unused_official_modules, key=key, hint=body_hint
        )

    def describe(self) -> str:
        """Short architecture description for messages: the name and its ``config``."""
        knobs = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{self.architecture} ({knobs})" if knobs else self.architecture

    # -- for subclasses -----------------------------------------------------------
    def _forward_padded(self, x: torch.Tensor, inject: Inject) -> torch.Tensor:
        raise NotImplementedError

    def _encode_padded(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _set_points(self, points: Mapping[str, InjectionPoint]) -> None:
        self._points = dict(points)

    # -- helpers ------------------------------------------------------------------
    def _cast_in(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"{self.architecture} expects an image batch (B, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.architecture} expects float images in [0, 1], got dtype {x.dtype}")
        weight = next(self.parameters(), None)
        return x if weight is None or weight.dtype == x.dtype else x.to(weight.dtype)

    def _check_guidance(self, guidance: Guidance | None) -> None:
        if guidance is None:
            return
        unknown = sorted(set(guidance) - set(self._points))
        if unknown:
            raise ValueError(
                f"{self.architecture} has no injection point(s) {', '.join(map(repr, unknown))}; "
                f"its points are {', '.join(self._points)}"
            )

    def _injector(self, guidance: Guidance | None) -> Inject:
        def inject(name: str, feature: torch.Tensor) -> torch.Tensor:
            fn = guidance.get(name) if guidance else None
            if fn is None:
                return feature
            out = fn(feature)
            if not isinstance(out, torch.Tensor) or out.shape != feature.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"guidance at {self.architecture} point {name!r} must return a tensor of "
                    f"shape {tuple(feature.shape)}, got {got}"
                )
            return out

        return inject


def check_layout(
    body: str,
    dim: int,
    num_blocks: Sequence[int],
    heads: Sequence[int],
    layernorm_type: str,
    extra_heads: Iterable[tuple[str, int, int]] = (),
) -> None:
    """Raise :class:`BuildError` naming the argument when the knobs cannot build."""
    if len(num_blocks) != 4 or any(int(n) < 1 for n in num_blocks):
        raise BuildError(f"{body}: num_blocks must be 4 positive counts, got {list(num_blocks)}")
    if len(heads) != 4:
        raise BuildError(f"{body}: heads must be 4 head counts, got {list(heads)}")
    if dim < 2 or dim % 2:
        raise BuildError(f"{body}: dim must be a positive even number, got {dim}")
    if layernorm_type not in LAYERNORM_TYPES:
        raise BuildError(f"{body}: layernorm_type must be one of {', '.join(LAYERNORM_TYPES)}, got {layernorm_type!r}")
    widths = [
        ("heads[0] (encoder level 1)", dim, heads[0]),
        ("heads[1] (level 2)", dim * 2, heads[1]),
        ("heads[2] (level 3)", dim * 4, heads[2]),
        ("heads[3] (latent)", dim * 8, heads[3]),
        ("heads[0] (decoder level 1 and refinement)", dim * 2, heads[0]),
        *extra_heads,
    ]
    for argument, channels, n in widths:
        if int(n) < 1 or channels % int(n):
            raise BuildError(f"{body}: {argument} = {n} does not divide the {channels} channels there")
