"""Pixel losses (L1, MSE, Charbonnier) and the weighted sum that combines any losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from restorekit.building import build_part, split_spec
from restorekit.contracts import BindsToModel, LossTerms, ModelAux, as_terms
from restorekit.errors import BuildError


class L1Loss(nn.Module):
    """Mean absolute error."""

    def forward(
        self, restored: Tensor, target: Tensor, *, lq: Tensor | None = None, aux: ModelAux | None = None
    ) -> Tensor:
        return (restored - target).abs().mean()


class MSELoss(nn.Module):
    """Mean squared error."""

    def forward(
        self, restored: Tensor, target: Tensor, *, lq: Tensor | None = None, aux: ModelAux | None = None
    ) -> Tensor:
        return (restored - target).pow(2).mean()


class CharbonnierLoss(nn.Module):
    """``mean(sqrt((R - G)^2 + eps^2))``: L1 that stays smooth at zero."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(
        self, restored: Tensor, target: Tensor, *, lq: Tensor | None = None, aux: ModelAux | None = None
    ) -> Tensor:
        return torch.sqrt((restored - target).pow(2) + self.eps**2).mean()


class WeightedSumLoss(nn.Module):
    """``sum_i weight_i * term_i``, from specs ``[{type: l1, weight: 1.0}, {type: dpc, ...}]``.

    * Returns the weighted terms by name (its type; ``dpc_1`` for a repeated type);
      the engine sums them with the model's auxiliary losses and logs each.
    * A term with weight 0 is not computed (no backbone passes for a switched-off DPC)
      and is not bound to the model.
    * ``bind(model)`` is forwarded to every term that has it.
    """

    def __init__(self, terms: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        if not isinstance(terms, (list, tuple)) or not terms:
            raise BuildError("weighted_sum: 'terms' must be a non-empty list of loss specs with a 'weight'")
        names: list[str] = []
        weights: list[float] = []
        losses = []
        for i, spec in enumerate(terms):
            if not isinstance(spec, Mapping):
                raise BuildError(f"weighted_sum: terms[{i}] must be a mapping {{type, weight, ...}}, got {spec!r}")
            spec = dict(spec)
            weight = spec.pop("weight", 1.0)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool):
                raise BuildError(f"weighted_sum: terms[{i}].weight must be a number, got {weight!r}")
            name, _ = split_spec("loss", spec)
            names.append(_unique(name, names))
            weights.append(float(weight))
            losses.append(build_part("loss", spec))
        self.names, self.weights = names, weights
        self.terms = nn.ModuleList(losses)

    def bind(self, model: nn.Module) -> None:
        for weight, term in zip(self.weights, self.terms):
            if weight != 0 and isinstance(term, BindsToModel):
                term.bind(model)

    def forward(
        self, restored: Tensor, target: Tensor, *, lq: Tensor | None = None, aux: ModelAux | None = None
    ) -> LossTerms:
        out: LossTerms = {}
        for name, weight, term in zip(self.names, self.weights, self.terms):
            if weight == 0:
                continue
            for key, value in as_terms(term(restored, target, lq=lq, aux=aux), name).items():
                out[key] = weight * value
        return out


def _unique(name: str, taken: Sequence[str]) -> str:
    if name not in taken:
        return name
    i = 1
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"
