r"""DINO-IR: a restoration body guided by a frozen backbone through MSF and D-R adapters.

    lq -> body ------------------------------------------------------> restored
     \                      guidance at injection points (latent, decoder3, ...)
      -> frozen backbone (grid ceil(H/8) x ceil(W/8)) -> layers -> fusion -> guide
                                       guide -> adapter_p(feature_p, guide)

The backbone runs once per forward, under ``no_grad``, on the degraded input, for
the guidance layers plus any layers a loss asked for (``request_backbone_layers``),
which the DPC loss then reuses from ``aux.lq_features`` (a
:class:`~restorekit.contracts.ModelAux`). How it covers the image (grid, windows)
is the model's :class:`~restorekit.backbones.guide.GuidePass`, which DPC follows too.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from restorekit.backbones.guide import (
    DEFAULT_GUIDE_BACKBONE,
    DEFAULT_OVERLAP,
    DEFAULT_PASS_RULE,
    DEFAULT_WINDOW,
    GuidePass,
)
from restorekit.building import build_part, merge_spec
from restorekit.contracts import Gated, ModelAux, check_frozen, is_frozen, is_pretrained
from restorekit.errors import BuildError

DEFAULT_BODY: dict[str, Any] = {"type": "restormer"}
DEFAULT_FUSION: dict[str, Any] = {"type": "msf", "num_experts": 4}
DEFAULT_ADAPTER: dict[str, Any] = {"type": "dino_restore", "fusion": "self_attention", "query": "guide"}
_MODEL_SET_FUSION_KEYS = ("in_channels", "num_layers", "out_channels")
_MODEL_SET_ADAPTER_KEYS = ("guide_channels", "channels")

_warned_random_backbone = False


def _warn_random_backbone_once(backbone: nn.Module) -> None:
    global _warned_random_backbone
    if _warned_random_backbone or is_pretrained(backbone):
        return
    _warned_random_backbone = True
    warnings.warn(
        f"dino_ir: the {type(backbone).__name__} backbone is randomly initialised (no weights "
        "given or found offline); its guidance is meaningless until you pass "
        "backbone={'weights': 'path/to/weights'}",
        UserWarning,
        stacklevel=3,
    )


class DinoIR(nn.Module):
    """DINO-IR (arXiv 2312.01677): body + frozen backbone + fusion + D-R adapters.

    Args:
        body, backbone, fusion, adapter: specs merged onto the defaults (Restormer,
            DINOv2 ViT-B/14, MSF with 4 experts, D-R self-attention over the guide
            and the feature), or built modules.
        layers: backbone blocks (0-based) the fusion combines.
        injection_points: body points that receive guidance (one adapter each).
        guide_stride: with ``guide_grid='stride'`` the backbone sees the input padded
            as the body pads it (a multiple of 8), on a ``H'/guide_stride x
            W'/guide_stride`` token grid of that padded size (rounded up): each token
            covers the same pixels as the body's feature cells, so at stride 8 the
            guide matches ``latent`` cell for cell, at any input size.
        guide_grid: ``stride`` or ``native`` (the backbone's own patch grid).
        guide_pass: how the backbone covers a grid larger than ``guide_window`` tokens
            a side: ``windowed`` (overlapping windows, blended; cost linear in pixels),
            ``budget`` (the image shrunk to fit one window, the maps resized back) or
            ``global`` (one pass; quadratic). A grid that fits is one global pass.
        guide_window: tokens a side one backbone pass covers at most (37: DINOv2's 518 px).
        guide_overlap: tokens neighbouring windows share at least.
        fusion_channels: C_f, channels of the fused guide.
        adapter_overrides: ``{point: partial adapter spec}`` merged onto ``adapter``
            for single points.
    """

    def __init__(
        self,
        body: Mapping[str, Any] | str | nn.Module | None = None,
        backbone: Mapping[str, Any] | str | nn.Module | None = None,
        fusion: Mapping[str, Any] | str | nn.Module | None = None,
        adapter: Mapping[str, Any] | str | None = None,
        layers: Sequence[int] = (2, 5, 8, 11),
        injection_points: Sequence[str] = ("latent", "decoder3", "decoder2"),
        guide_stride: int = 8,
        guide_grid: str = "stride",
        guide_pass: str = DEFAULT_PASS_RULE,
        guide_window: int = DEFAULT_WINDOW,
        guide_overlap: int = DEFAULT_OVERLAP,
        fusion_channels: int = 384,
        adapter_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        try:
            rule = GuidePass(
                grid=guide_grid, stride=guide_stride, rule=guide_pass, window=guide_window, overlap=guide_overlap
            )
        except BuildError as exc:
            raise BuildError(f"dino_ir: {exc}") from None
        self.body = build_part("body", merge_spec(DEFAULT_BODY, body))
        self.backbone = build_part("backbone", merge_spec(DEFAULT_GUIDE_BACKBONE, backbone))
        check_frozen(self.backbone, "dino_ir: backbone")
        self.layers = [int(layer) for layer in layers]
        self._check_layers("layers", self.layers)
        self.injection_points = list(injection_points)
        self.guide_pass = dataclasses.replace(rule, pad_multiple=int(self.body.pad_multiple))
        self.fusion_channels = int(fusion_channels)
        self.fusion = self._build_fusion(fusion)
        self.adapters = self._build_adapters(adapter, adapter_overrides or {})
        self._requested_layers: set[int] = set()
        _warn_random_backbone_once(self.backbone)

    # -- building -----------------------------------------------------------------
    def _check_layers(self, argument: str, layers: Sequence[int]) -> None:
        depth = int(self.backbone.num_layers)
        if not layers:
            raise BuildError(f"dino_ir: {argument} must name at least one backbone block")
        bad = [layer for layer in layers if not 0 <= layer < depth]
        if bad:
            raise BuildError(
                f"dino_ir: {argument} {bad} out of range for a backbone with {depth} blocks (0..{depth - 1})"
            )

    def _build_fusion(self, fusion: Any) -> nn.Module:
        spec = merge_spec(DEFAULT_FUSION, fusion)
        extra = dict(in_channels=int(self.backbone.embed_dim), num_layers=len(self.layers),
                     out_channels=self.fusion_channels)  # fmt: skip
        if isinstance(spec, Mapping):
            _reject_model_set_keys("fusion", spec, _MODEL_SET_FUSION_KEYS, "layers / fusion_channels")
            return build_part("fusion", spec, **extra)
        return build_part("fusion", spec)  # a built fusion, checked against its contract

    def _build_adapters(self, adapter: Any, overrides: Mapping[str, Any]) -> nn.ModuleDict:
        points = self.body.injection_points
        unknown = [p for p in list(self.injection_points) + list(overrides) if p not in points]
        if unknown:
            raise BuildError(
                f"dino_ir: injection point(s) {unknown} unknown to the "
                f"{type(self.body).__name__} body (its points: {', '.join(points)})"
            )
        base = merge_spec(DEFAULT_ADAPTER, adapter)
        adapters = {}
        for point in self.injection_points:
            spec = merge_spec(base, overrides.get(point))
            _reject_model_set_keys("adapter", spec, _MODEL_SET_ADAPTER_KEYS, "fusion_channels / the body")
            adapters[point] = build_part(
                "adapter", spec, guide_channels=self.fusion_channels, channels=points[point].channels
            )
        return nn.ModuleDict(adapters)

    # -- the guidance grid and extra layers -----------------------------------------
    def guide_input(self, x: Tensor) -> Tensor:
        """``x`` as the guide pass sees it (the body's padding on the stride grid)."""
        return self.guide_pass.prepare(x)

    def token_grid(self, height: int, width: int) -> tuple[int, int] | None:
        """Token grid of the guide for a guidance input of ``height x width``
        (after :meth:`guide_input`; None: the backbone's native grid)."""
        return self.guide_pass.token_grid(height, width)

    def request_backbone_layers(self, layers: Sequence[int]) -> None:
        """Keep these backbone layers from the guide pass in ``aux['lq_features']``."""
        layers = [int(layer) for layer in layers]
        self._check_layers("requested backbone layers", layers)
        self._requested_layers.update(layers)

    def train(self, mode: bool = True) -> DinoIR:
        super().train(mode)
        if is_frozen(self.backbone):
            self.backbone.eval()  # a frozen backbone never leaves eval mode
        return self

    # -- forward ------------------------------------------------------------------------
    def forward(self, lq: Tensor, return_aux: bool = False) -> Tensor | tuple[Tensor, ModelAux]:
        in_dtype = lq.dtype
        weight = next(self.body.parameters(), None)
        if weight is not None and lq.is_floating_point() and weight.dtype != lq.dtype:
            lq = lq.to(weight.dtype)  # weights cast with .to(bf16) take fp32 images, as a body does
        guide_in = self.guide_pass.prepare(lq)
        grid = self.guide_pass.token_grid(guide_in.shape[-2], guide_in.shape[-1])
        wanted = set(self.layers) | (self._requested_layers if return_aux else set())
        # A frozen backbone needs no graph (lq needs no gradient); a trainable one does.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not is_frozen(self.backbone)):
            feats = self.guide_pass.features(self.backbone, guide_in, sorted(wanted))
        guide = self.fusion([feats[layer] for layer in self.layers])
        guidance = {point: functools.partial(self.adapters[point], guide=guide) for point in self.injection_points}
        restored = self.body(lq, guidance=guidance).to(in_dtype)
        if not return_aux:
            return restored
        aux = ModelAux(
            backbone=self.backbone,
            lq_features=feats,
            grid=grid,
            guide_pass=self.guide_pass,
            guide=guide,
            gate=self.fusion.last_gate if isinstance(self.fusion, Gated) else None,
        )
        return restored, aux


def _reject_model_set_keys(kind: str, spec: Mapping[str, Any], keys: Sequence[str], use: str) -> None:
    given = [k for k in keys if k in spec]
    if given:
        raise BuildError(f"dino_ir: {kind} keys {given} are set by the model; use {use} instead")
