"""Pixel losses and the weighted sum (term building, logging, bind forwarding, aux loss)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit import build
from restorekit.contracts import as_terms, collect_aux_losses, sum_terms
from restorekit.errors import BuildError
from restorekit.losses.pixel import CharbonnierLoss, L1Loss, MSELoss, WeightedSumLoss

FAST = settings(max_examples=15, deadline=None)


@FAST
@given(seed=st.integers(0, 1000), eps=st.floats(1e-4, 1e-1))
def test_pixel_losses_match_their_formulas(seed, eps) -> None:
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, 3, 5, 4, generator=gen), torch.rand(2, 3, 5, 4, generator=gen)
    assert torch.allclose(L1Loss()(a, b), torch.nn.functional.l1_loss(a, b))
    assert torch.allclose(MSELoss()(a, b), torch.nn.functional.mse_loss(a, b))
    charb = CharbonnierLoss(eps)(a, b)
    assert torch.allclose(charb, ((a - b) ** 2 + eps**2).sqrt().mean())
    assert L1Loss()(a, b) <= charb <= L1Loss()(a, b) + eps
    assert CharbonnierLoss(eps)(a, a).item() == pytest.approx(eps, rel=1e-5)


def test_weighted_sum_returns_each_weighted_term_by_name() -> None:
    loss = build(
        "loss",
        {
            "type": "weighted_sum",
            "terms": [{"type": "l1", "weight": 1.0}, {"type": "mse", "weight": 0.5}, {"type": "l1", "weight": 2.0}],
        },
    )
    a, b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    terms = loss(a, b)
    l1, mse = (a - b).abs().mean(), (a - b).pow(2).mean()
    assert list(terms) == ["l1", "mse", "l1_1"]
    torch.testing.assert_close(terms["mse"], 0.5 * mse)
    torch.testing.assert_close(terms["l1_1"], 2.0 * l1)
    torch.testing.assert_close(sum_terms(terms, a), 3.0 * l1 + 0.5 * mse)


def test_weighted_sum_skips_zero_weights_and_the_engine_adds_model_aux_losses() -> None:
    a = torch.rand(1, 3, 4, 4, requires_grad=True)
    b = torch.rand(1, 3, 4, 4)

    class Reporting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.aux_loss: torch.Tensor | None = torch.tensor(0.25)

    loss = WeightedSumLoss([{"type": "l1", "weight": 1.0}, {"type": "mse", "weight": 0}])
    terms = as_terms(loss(a, b), "weighted_sum")
    assert list(terms) == ["l1"]
    terms.update(collect_aux_losses(torch.nn.Sequential(Reporting())))
    assert list(terms) == ["l1", "aux/0"]
    torch.testing.assert_close(sum_terms(terms, a), (a - b).abs().mean() + 0.25)
    zero = sum_terms(WeightedSumLoss([{"type": "l1", "weight": 0.0}])(a, b), a)
    zero.backward()
    assert zero.item() == 0 and a.grad is not None


def test_weighted_sum_forwards_bind_to_weighted_terms_only() -> None:
    bound = []

    class Probe(torch.nn.Module):
        def bind(self, model):
            bound.append(model)

        def forward(self, restored, target, *, lq=None, aux=None):
            return restored.mean()

    loss = WeightedSumLoss([{"type": "l1"}, {"type": "l1", "weight": 0.0}])
    loss.terms[0] = Probe()
    loss.terms[1] = Probe()
    loss.bind("the model")
    assert bound == ["the model"]


def test_weighted_sum_rejects_bad_terms() -> None:
    with pytest.raises(BuildError, match="non-empty list"):
        WeightedSumLoss([])
    with pytest.raises(BuildError, match=r"terms\[0\].weight"):
        WeightedSumLoss([{"type": "l1", "weight": "big"}])
    with pytest.raises(BuildError, match="no 'type'"):
        WeightedSumLoss([{"weight": 1.0}])
