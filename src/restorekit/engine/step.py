"""The loss of one batch: forward, the recipe's loss, and every auxiliary loss the model reports.

Shared by the trainer and the benchmarks, so both compute exactly the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from restorekit.contracts import GuidedModel, LossTerms, as_terms, collect_aux_losses, sum_terms


@dataclass
class StepLoss:
    """The total a backward starts from, and its named terms (weighted; they add up to it)."""

    total: Tensor
    terms: LossTerms


def forward_loss(
    model: nn.Module, forward: nn.Module, loss_fn: nn.Module, lq: Tensor, gt: Tensor, loss_name: str = "loss"
) -> StepLoss:
    """``forward`` (the model, or its DDP / compiled wrapper) on ``lq``, then the loss.

    A loss that returns one scalar has it logged as ``loss_name`` (the recipe's loss type).
    A :class:`~restorekit.contracts.GuidedModel` hands its loss a ``ModelAux``;
    auxiliary losses reported by any module of ``model`` are added whatever the
    recipe's loss is, so a load-balance or routing loss is never dropped.
    """
    if isinstance(model, GuidedModel):
        restored, aux = forward(lq, return_aux=True)
    else:
        restored, aux = forward(lq), None
    terms = as_terms(loss_fn(restored, gt, lq=lq, aux=aux), loss_name)
    terms.update(collect_aux_losses(model))
    return StepLoss(sum_terms(terms, restored), terms)
