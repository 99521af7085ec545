"""DPC, the DINO perception contrastive loss.

    DPC = sum_l w_l * d(phi_l(R), phi_l(G)) / (d(phi_l(R), phi_l(D)) + eps)

phi_l: frozen backbone features of block l; R restored, G clean target (the
positive), D degraded input (the negative). The ratio is taken per image and
averaged over the batch; d is the mean L1 distance or the mean cosine distance
of token features.

Cost rule: one backbone serves guidance and loss. ``bind(model)`` asks the model
to keep ``layers`` from its guide pass on D (``aux["lq_features"]``) and
keeps a plain reference to ``model.backbone`` (not a submodule: no second copy,
no double parameters). Per step: phi(D) comes free from the guide pass
(``aux.lq_features``),
phi(G) runs under ``no_grad``, phi(R) runs with gradients up to ``max(layers)``
only. All three run by the model's guide pass rule (``aux.guide_pass``: the
body's padding, the token grid and, for large images, the windows), so the guidance
features are reusable token for token; a loss used without such a model applies its
own grid (``grid``/``grid_stride``) under the default pass rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restorekit.backbones.guide import DEFAULT_GUIDE_BACKBONE, GRID_RULES, GuidePass
from restorekit.building import build_part, merge_spec
from restorekit.contracts import GuidedModel, ModelAux
from restorekit.errors import BuildError

DISTANCES = ("l1", "cosine")


def feature_distance(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """Per-image distance ``(B,)`` between two ``(B, C, h, w)`` feature maps."""
    a, b = a.float(), b.float()
    if distance == "l1":
        return (a - b).abs().flatten(1).mean(dim=1)
    return (1.0 - F.cosine_similarity(a, b, dim=1)).flatten(1).mean(dim=1)


class DPCLoss(nn.Module):
    """DINO perception contrastive loss (see the module docstring).

    Args:
        layers: backbone blocks (0-based) to compare in.
        weights: one weight per layer (``None``: equal, ``1 / len(layers)``).
        distance: ``l1`` or ``cosine``.
        eps: keeps the ratio finite when R equals D.
        backbone: a backbone spec, used only when the loss is not bound to a model
            with a backbone (merged onto ``{type: dinov2, size: b}``).
        grid, grid_stride: token-grid rule when no model gives one:
            ``stride`` -> ``ceil(H/grid_stride) x ceil(W/grid_stride)``, ``native`` -> the
            backbone's native patch grid (under the default pass rule, windowed).
    """

    def __init__(
        self,
        layers: Sequence[int] = (1, 3),
        weights: Sequence[float] | None = None,
        distance: str = "l1",
        eps: float = 1e-6,
        backbone: Mapping[str, Any] | str | nn.Module | None = None,
        grid: str = "stride",
        grid_stride: int = 8,
    ) -> None:
        super().__init__()
        layers = [int(layer) for layer in layers]
        if not layers or any(layer < 0 for layer in layers):
            raise BuildError(f"dpc: 'layers' must be a non-empty list of block indices >= 0, got {layers}")
        if weights is None:
            weights = [1.0 / len(layers)] * len(layers)
        if len(weights) != len(layers):
            raise BuildError(f"dpc: 'weights' has {len(weights)} entries for {len(layers)} layers")
        if distance not in DISTANCES:
            raise BuildError(f"dpc: 'distance' must be one of {DISTANCES}, got {distance!r}")
        if grid not in GRID_RULES:
            raise BuildError(f"dpc: 'grid' must be one of {GRID_RULES}, got {grid!r}")
        if isinstance(grid_stride, bool) or not isinstance(grid_stride, int) or grid_stride < 1:
            raise BuildError(f"dpc: 'grid_stride' must be an integer >= 1, got {grid_stride!r}")
        self.layers, self.weights = layers, [float(w) for w in weights]
        self.distance, self.eps = distance, eps
        self.own_pass = GuidePass(grid=grid, stride=grid_stride)
        self.own_backbone = (
            build_part("backbone", merge_spec(DEFAULT_GUIDE_BACKBONE, backbone)) if backbone is not None else None
        )
        self._bound: list[nn.Module] = []  # a plain list: the model is not our submodule

    def bind(self, model: nn.Module) -> None:
        """Share ``model.backbone`` and ask the model's guide pass to keep our layers."""
        if not isinstance(model, GuidedModel):
            if self.own_backbone is None:
                raise BuildError(
                    f"dpc: model {type(model).__name__} has no backbone; give the dpc loss a "
                    f"'backbone' spec (e.g. {{type: dinov2, size: b}})"
                )
            return
        model.request_backbone_layers(self.layers)
        self._bound = [model]
        if self.own_backbone is not None:
            warnings.warn(
                "dpc: bound to a model with a backbone, so the loss's own 'backbone' spec is unused "
                "(the model's backbone serves DPC); its copy is released",
                stacklevel=2,
            )
            self.own_backbone = None  # a full second ViT would otherwise sit unused in memory

    @property
    def bound_model(self) -> nn.Module | None:
        return self._bound[0] if self._bound else None

    def _backbone(self, aux: ModelAux | None) -> nn.Module:
        if aux is not None and aux.backbone is not None:
            return aux.backbone
        if self.bound_model is not None:
            return self.bound_model.backbone
        if self.own_backbone is not None:
            return self.own_backbone
        raise BuildError("dpc: no backbone; bind the loss to a DINO-IR model or give it a 'backbone' spec")

    def guide_pass(self, aux: ModelAux | None = None) -> GuidePass:
        """The pass rule all three feature passes follow: the model's, when there is one.

        R, G and D must be prepared and covered alike (padding, grid, windows) for
        phi(D) from the guide pass to compare with phi(R) and phi(G) token for token.
        """
        if aux is not None and aux.guide_pass is not None:
            return aux.guide_pass
        model = self.bound_model
        return model.guide_pass if model is not None else self.own_pass

    def forward(
        self, restored: Tensor, target: Tensor, *, lq: Tensor | None = None, aux: ModelAux | None = None
    ) -> Tensor:
        backbone, rule = self._backbone(aux), self.guide_pass(aux)
        phi_d = self._degraded_features(backbone, rule, lq, aux)
        with torch.no_grad():
            phi_g = rule(backbone, target, self.layers)
        phi_r = rule(backbone, restored, self.layers)
        total = restored.new_zeros(restored.shape[0], dtype=torch.float32)
        for layer, weight in zip(self.layers, self.weights):
            positive = feature_distance(phi_r[layer], phi_g[layer], self.distance)
            negative = feature_distance(phi_r[layer], phi_d[layer], self.distance)
            total = total + weight * positive / (negative + self.eps)
        return total.mean()

    def _degraded_features(
        self, backbone: nn.Module, rule: GuidePass, lq: Tensor | None, aux: ModelAux | None
    ) -> Mapping[int, Tensor]:
        """phi(D): from the guide pass when it kept our layers, else a no-grad pass on lq."""
        cached = aux.lq_features if aux is not None else {}
        if all(layer in cached for layer in self.layers):
            return cached
        if lq is None:
            raise ValueError("dpc: needs the degraded input: pass lq=... or aux from a model bound with bind(model)")
        with torch.no_grad():
            return rule(backbone, lq, self.layers)
