"""The FFT loss (MoCE-IR's frequency term)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit import build


@settings(max_examples=10, deadline=None)
@given(height=st.integers(1, 12), width=st.integers(1, 12), offset=st.floats(-1.0, 1.0))
def test_a_constant_difference_lives_in_the_dc_term_only(height, width, offset):
    """rfft2 of a constant c is c*H*W at DC and 0 elsewhere; the mean runs over re and im."""
    loss = build("loss", {"type": "fft"})
    target = torch.rand(1, 1, height, width)
    value = loss(target + offset, target)
    expected = abs(offset) * height * width / (height * (width // 2 + 1) * 2)
    assert abs(value.item() - expected) < 1e-4 * max(1.0, expected)


def test_equals_the_l1_of_stacked_real_and_imaginary_spectra():
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 9, 14), torch.rand(2, 3, 9, 14)
    fa, fb = torch.fft.rfft2(a), torch.fft.rfft2(b)
    expected = (torch.stack([fa.real, fa.imag], -1) - torch.stack([fb.real, fb.imag], -1)).abs().mean()
    value = build("loss", {"type": "fft"})(a, b, lq=a, aux=None)
    assert torch.allclose(value, expected, rtol=1e-5)


def test_weighted_in_a_sum_and_differentiable_from_bf16():
    loss = build(
        "loss", {"type": "weighted_sum", "terms": [{"type": "l1", "weight": 1.0}, {"type": "fft", "weight": 0.1}]}
    )
    restored = torch.rand(1, 3, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    target = torch.rand(1, 3, 8, 8, dtype=torch.bfloat16)
    terms = loss(restored, target)
    assert set(terms) == {"l1", "fft"}
    alone = build("loss", {"type": "fft"})(restored, target)
    assert alone.dtype == torch.float32 and torch.allclose(terms["fft"], 0.1 * alone)
    sum(terms.values()).backward()
    assert restored.grad is not None and torch.isfinite(restored.grad.float()).all()
