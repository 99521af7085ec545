"""MSF and concat fusion: shapes, gate properties, sparse gating, load balance."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit import build
from restorekit.errors import BuildError
from restorekit.fusion.concat import ConcatFusion
from restorekit.fusion.msf import MultiLayerSemanticFusion

FAST = settings(max_examples=12, deadline=None)


def _feats(batch: int, channels: int, layers: int, h: int, w: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, h, w, generator=gen) for _ in range(layers)]


@FAST
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 8),
    layers=st.integers(1, 4),
    out=st.integers(1, 12),
    experts=st.integers(1, 5),
    hw=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    data=st.data(),
)
def test_msf_shape_and_gate_properties(batch, channels, layers, out, experts, hw, data) -> None:
    top_k = data.draw(st.one_of(st.none(), st.integers(1, experts)))
    torch.manual_seed(0)
    msf = MultiLayerSemanticFusion(channels, layers, out, num_experts=experts, top_k=top_k)
    y = msf(_feats(batch, channels, layers, *hw))
    assert y.shape == (batch, out, *hw)
    gate = msf.last_gate
    assert gate.shape == (batch, experts)
    assert torch.allclose(gate.sum(dim=1), torch.ones(batch), atol=1e-5)
    assert (gate >= 0).all()
    kept = experts if top_k is None else top_k
    assert ((gate > 0).sum(dim=1) == kept).all()
    assert msf.aux_loss is None


@FAST
@given(hw=st.tuples(st.integers(1, 6), st.integers(1, 6)), layers=st.integers(1, 4), out=st.integers(1, 9))
def test_concat_is_one_linear_map_of_the_layers_in_order(hw, layers, out) -> None:
    """y = b + sum_l W_l F_l, W_l the l-th block of input channels of the 1x1 conv."""
    torch.manual_seed(0)
    fusion = ConcatFusion(4, layers, out)
    feats = _feats(2, 4, layers, *hw)
    y = fusion(feats)
    assert y.shape == (2, out, *hw)
    weight = fusion.proj.weight[:, :, 0, 0]
    expected = fusion.proj.bias[None, :, None, None] + sum(
        torch.einsum("oc,bchw->bohw", weight[:, 4 * i : 4 * (i + 1)], f) for i, f in enumerate(feats)
    )
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    assert fusion.last_gate is None and fusion.aux_loss is None


def test_msf_output_is_the_gate_weighted_sum_of_experts() -> None:
    torch.manual_seed(1)
    msf = MultiLayerSemanticFusion(4, 2, 6, num_experts=3, top_k=2)
    feats = _feats(3, 4, 2, 5, 5)
    y = msf(feats)
    x = torch.cat(feats, dim=1)
    expected = sum(msf.last_gate[:, k, None, None, None] * expert(x) for k, expert in enumerate(msf.experts))
    assert torch.allclose(y, expected, atol=1e-6)


def test_msf_temperature_sharpens_and_is_learnable_or_fixed() -> None:
    torch.manual_seed(2)
    feats = _feats(2, 4, 2, 3, 3)
    hot = MultiLayerSemanticFusion(4, 2, 6, num_experts=4, temperature=10.0)
    cold = MultiLayerSemanticFusion(4, 2, 6, num_experts=4, temperature=0.05, learn_temperature=False)
    cold.load_state_dict(hot.state_dict())  # same weights; log_temperature is a buffer in cold
    cold.log_temperature.fill_(torch.tensor(0.05).log())
    hot(feats), cold(feats)
    assert cold.last_gate.max(dim=1).values.min() > hot.last_gate.max(dim=1).values.max()
    assert "log_temperature" in dict(hot.named_parameters())
    assert "log_temperature" not in dict(cold.named_parameters())


def test_msf_load_balance_loss_is_zero_when_uniform_and_backpropagates() -> None:
    torch.manual_seed(3)
    msf = MultiLayerSemanticFusion(4, 2, 6, num_experts=4, load_balance_weight=0.5)
    msf(_feats(4, 4, 2, 3, 3))
    assert msf.aux_loss is not None and msf.aux_loss.item() >= 0
    msf.aux_loss.backward()
    assert msf.gate[0].weight.grad is not None and msf.gate[0].weight.grad.abs().sum() > 0
    with torch.no_grad():  # a gate with zero logits is uniform: no imbalance
        msf.gate[2].weight.zero_()
        msf.gate[2].bias.zero_()
    msf(_feats(4, 4, 2, 3, 3))
    assert msf.aux_loss.abs().item() < 1e-6


def test_msf_every_trainable_parameter_gets_a_gradient_when_dense() -> None:
    torch.manual_seed(4)
    msf = MultiLayerSemanticFusion(4, 2, 6, num_experts=3)
    msf(_feats(2, 4, 2, 4, 4)).square().mean().backward()
    for name, p in msf.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_msf_rejects_bad_knobs_and_inputs() -> None:
    with pytest.raises(ValueError, match="top_k"):
        MultiLayerSemanticFusion(4, 2, 6, num_experts=3, top_k=4)
    with pytest.raises(ValueError, match="temperature"):
        MultiLayerSemanticFusion(4, 2, 6, temperature=0.0)
    msf = MultiLayerSemanticFusion(4, 2, 6)
    with pytest.raises(ValueError, match="2 layer maps"):
        msf(_feats(1, 4, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        msf(_feats(1, 5, 2, 2, 2))


def test_fusions_build_from_the_registry() -> None:
    msf = build("fusion", {"type": "msf", "in_channels": 8, "num_layers": 4, "num_experts": 2, "top_k": 1})
    assert isinstance(msf, MultiLayerSemanticFusion) and msf.top_k == 1
    assert isinstance(build("fusion", {"type": "concat", "in_channels": 8, "num_layers": 4}), ConcatFusion)
    with pytest.raises(BuildError, match="num_expert"):
        build("fusion", {"type": "msf", "in_channels": 8, "num_layers": 4, "num_expert": 2})


def test_sparse_msf_skips_unpicked_experts_only_at_inference() -> None:
    torch.manual_seed(5)
    msf = MultiLayerSemanticFusion(4, 2, 6, num_experts=4, top_k=1)
    feats = _feats(1, 4, 2, 3, 3)
    calls = []
    for k, expert in enumerate(msf.experts):
        expert.register_forward_hook(lambda *_, k=k: calls.append(k))
    training = msf(feats)
    assert sorted(calls) == [0, 1, 2, 3]  # every expert runs while gradients are on
    calls.clear()
    with torch.no_grad():
        inference = msf(feats)
    assert calls == [int(msf.last_gate.argmax())]
    assert torch.allclose(training, inference)


def _expert_by_hand(expert: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """1x1 conv, GELU, 3x3 depthwise conv (zero padding), 1x1 conv."""
    conv = torch.nn.functional.conv2d
    y = conv(x, expert.reduce.weight, expert.reduce.bias)
    y = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))
    y = conv(y, expert.dwconv.weight, expert.dwconv.bias, padding=1, groups=y.shape[1])
    return conv(y, expert.proj.weight, expert.proj.bias)


def _gelu(v: float) -> float:
    return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))


@pytest.mark.parametrize("top_k", [None, 2])
def test_msf_gate_and_load_balance_by_hand(top_k) -> None:
    """softmax(MLP(mean over pixels of the concatenated layers) / tau), top-k kept, and
    w * (K * sum_k mean_b(g_bk)^2 - 1), in plain python on 2 images."""
    torch.manual_seed(6)
    msf = MultiLayerSemanticFusion(2, 2, 3, num_experts=3, top_k=top_k, temperature=0.7, load_balance_weight=0.5)
    feats = _feats(2, 2, 2, 3, 4, seed=6)
    out = msf(feats)
    w1, b1 = msf.gate[0].weight.tolist(), msf.gate[0].bias.tolist()
    w2, b2 = msf.gate[2].weight.tolist(), msf.gate[2].bias.tolist()
    gates = []
    for image in range(2):
        pooled = [feats[c // 2][image, c % 2].mean().item() for c in range(4)]  # layer 0's channels first
        hidden = [_gelu(sum(w * p for w, p in zip(row, pooled)) + b) for row, b in zip(w1, b1)]
        logits = [(sum(w * h for w, h in zip(row, hidden)) + b) / 0.7 for row, b in zip(w2, b2)]
        kept = sorted(range(3), key=lambda k: -logits[k])[: top_k or 3]
        exps = [math.exp(logits[k]) if k in kept else 0.0 for k in range(3)]
        gates.append([e / sum(exps) for e in exps])
    torch.testing.assert_close(msf.last_gate, torch.tensor(gates), rtol=1e-5, atol=1e-6)
    x = torch.cat(feats, dim=1)
    mixed = sum(torch.tensor([g[k] for g in gates])[:, None, None, None] * _expert_by_hand(msf.experts[k], x)
                for k in range(3))  # fmt: skip
    torch.testing.assert_close(out, mixed, rtol=1e-5, atol=1e-6)
    importance = [(gates[0][k] + gates[1][k]) / 2 for k in range(3)]
    assert msf.aux_loss.item() == pytest.approx(0.5 * (3 * sum(v * v for v in importance) - 1), rel=1e-5)
