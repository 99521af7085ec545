"""D-R adapter: adaption to the point's size, identity at init, fusion types, query side."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit import build
from restorekit.adapters.dino_restore import DinoRestoreAdapter, default_heads

FAST = settings(max_examples=10, deadline=None)
FUSIONS = ["self_attention", "cross_attention", "concat", "add"]


def _perturb_zero_init(adapter: DinoRestoreAdapter, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in adapter.zero_initialised():
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.1)


# (fusion, query): the query side exists only for cross attention.
FUSION_QUERIES = [(f, "guide") for f in FUSIONS] + [("cross_attention", "feature")]


@FAST
@given(
    fusion_query=st.sampled_from(FUSION_QUERIES),
    guide_hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    feat_hw=st.tuples(st.integers(1, 12), st.integers(1, 12)),
)
def test_adapter_is_identity_at_init_for_any_sizes(fusion_query, guide_hw, feat_hw) -> None:
    fusion, query = fusion_query
    torch.manual_seed(0)
    adapter = DinoRestoreAdapter(12, 8, fusion=fusion, query=query, head_channels=4)
    feature = torch.randn(2, 8, *feat_hw)
    out = adapter(feature, torch.randn(2, 12, *guide_hw))
    assert out.shape == feature.shape
    assert torch.equal(out, feature)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_adapter_with_biases_is_identity_at_init(fusion) -> None:
    """The zero-initialised layer starts with a zero bias too, or the body would not keep its behaviour."""
    torch.manual_seed(0)
    adapter = DinoRestoreAdapter(12, 8, fusion=fusion, heads=2, bias=True)
    for module in adapter.zero_initialised():
        assert module.bias is not None and not module.bias.any()
        assert not module.weight.any()
    feature = torch.randn(2, 8, 9, 7)
    assert torch.equal(adapter(feature, torch.randn(2, 12, 4, 3)), feature)


@pytest.mark.parametrize(("fusion", "query"), FUSION_QUERIES)
def test_every_parameter_trains_once_the_zero_init_layer_moves(fusion, query) -> None:
    torch.manual_seed(1)
    adapter = DinoRestoreAdapter(12, 8, fusion=fusion, query=query, heads=2, bias=True)
    feature, guide = torch.randn(2, 8, 10, 10), torch.randn(2, 12, 5, 5)
    adapter(feature, guide).square().mean().backward()
    zero = {id(p) for m in adapter.zero_initialised() for p in m.parameters()}
    for name, p in adapter.named_parameters():  # at init only the zero layer can learn
        has_grad = p.grad is not None and p.grad.abs().sum() > 0
        assert has_grad == (id(p) in zero), name
    adapter.zero_grad()
    _perturb_zero_init(adapter)
    out = adapter(feature, guide)
    assert not torch.equal(out, feature)
    out.square().mean().backward()
    for name, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_query_side_changes_the_result() -> None:
    torch.manual_seed(2)
    a = DinoRestoreAdapter(12, 8, fusion="cross_attention", query="guide", heads=2)
    b = DinoRestoreAdapter(12, 8, fusion="cross_attention", query="feature", heads=2)
    b.load_state_dict(a.state_dict())
    _perturb_zero_init(a), _perturb_zero_init(b)
    feature, guide = torch.randn(2, 8, 6, 6), torch.randn(2, 12, 3, 3)
    assert not torch.allclose(a(feature, guide), b(feature, guide))


def test_adaption_resizes_bilinearly_after_the_channel_match() -> None:
    torch.manual_seed(3)
    adapter = DinoRestoreAdapter(12, 8, fusion="add")
    _perturb_zero_init(adapter)
    guide = torch.randn(1, 12, 4, 4)
    adapted = adapter.adaption(guide, (8, 8))
    small = adapter.adaption.proj(adapter.adaption.act(adapter.adaption.conv(guide)))
    expected = torch.nn.functional.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(adapted, expected)
    feature = torch.randn(1, 8, 8, 8)
    assert torch.allclose(adapter(feature, guide), feature + expected)


def test_attention_adapter_uses_the_shared_channel_attention(monkeypatch) -> None:
    import restorekit.adapters.dino_restore as dr

    calls = []
    original = dr.channel_attention

    def spy(q, k, v, heads, temperature):
        calls.append(heads)
        return original(q, k, v, heads, temperature)

    monkeypatch.setattr(dr, "channel_attention", spy)
    DinoRestoreAdapter(12, 96, fusion="cross_attention")(torch.randn(1, 96, 4, 4), torch.randn(1, 12, 2, 2))
    DinoRestoreAdapter(12, 96)(torch.randn(1, 96, 4, 4), torch.randn(1, 12, 2, 2))  # self: 192 channels, 2 heads
    assert calls == [2, 2]


def test_default_heads_follow_restormer_widths() -> None:
    assert [default_heads(c, 48) for c in (384, 192, 96, 48, 16, 100)] == [8, 4, 2, 1, 1, 2]


def test_adapter_rejects_bad_knobs() -> None:
    with pytest.raises(ValueError, match="fusion"):
        DinoRestoreAdapter(12, 8, fusion="film")
    with pytest.raises(ValueError, match="query"):
        DinoRestoreAdapter(12, 8, query="both")
    with pytest.raises(ValueError, match="heads=3"):
        DinoRestoreAdapter(12, 8, heads=3)
    for fusion in ("self_attention", "concat", "add"):
        with pytest.raises(ValueError, match="needs fusion='cross_attention'"):
            DinoRestoreAdapter(12, 8, fusion=fusion, query="feature")


def test_attention_is_the_old_name_of_the_cross_form() -> None:
    """Recipes and checkpoints written before self-attention existed keep their meaning."""
    torch.manual_seed(4)
    old = DinoRestoreAdapter(12, 8, fusion="attention", heads=2)
    new = DinoRestoreAdapter(12, 8, fusion="cross_attention", heads=2)
    assert old.fusion_type == "cross_attention"
    new.load_state_dict(old.state_dict())  # same parameter names
    _perturb_zero_init(old), new.load_state_dict(old.state_dict())
    feature, guide = torch.randn(1, 8, 5, 5), torch.randn(1, 12, 5, 5)
    assert torch.equal(old(feature, guide), new(feature, guide))


# An independent NumPy evaluation of the self-attention fusion's formula:
#   g = W2 * gelu(conv3x3(guide; W1, b1)) + b2          (adaption, same size: no resize)
#   x = LayerNorm_channels([feature, g])               (2C channels, eps 1e-5)
#   q, k, v = dwconv3x3(conv1x1(x))                    (no bias)
#   per head h: A = softmax(T_h * (q/|q|)(k/|k|)^T over channels), o = A v
#   out = feature + conv1x1(o)                         (2C -> C)


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, groups: int = 1) -> np.ndarray:
    """Zero-padded 'same' convolution of (C, H, W) by (O, C/groups, k, k), loops only."""
    c, h, wd = x.shape
    o, cg, k, _ = w.shape
    pad = k // 2
    xp = np.zeros((c, h + 2 * pad, wd + 2 * pad))
    xp[:, pad : pad + h, pad : pad + wd] = x
    out = np.zeros((o, h, wd))
    per_group = o // groups
    for oc in range(o):
        g0 = (oc // per_group) * cg
        for i in range(h):
            for j in range(wd):
                out[oc, i, j] = np.sum(xp[g0 : g0 + cg, i : i + k, j : j + k] * w[oc])
        if b is not None:
            out[oc] += b[oc]
    return out


def _np_self_attention_fusion(params: dict[str, np.ndarray], feature: np.ndarray, guide: np.ndarray, heads: int):
    hidden = _np_conv(guide, params["adaption.conv.weight"], params["adaption.conv.bias"])
    hidden = 0.5 * hidden * (1 + np.vectorize(math.erf)(hidden / math.sqrt(2)))
    g = _np_conv(hidden, params["adaption.proj.weight"], params["adaption.proj.bias"])
    x = np.concatenate([feature, g], axis=0)
    mu, var = x.mean(axis=0), x.var(axis=0)
    x = (x - mu) / np.sqrt(var + 1e-5) * params["attention.norm.body.weight"][:, None, None]
    x = x + params["attention.norm.body.bias"][:, None, None]
    qkv = _np_conv(_np_conv(x, params["attention.qkv.weight"]), params["attention.qkv_dwconv.weight"],
                   groups=x.shape[0] * 3)  # fmt: skip
    c2, h, w = x.shape
    q, k, v = (a.reshape(heads, c2 // heads, h * w) for a in np.split(qkv, 3, axis=0))
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    logits = np.einsum("hcn,hdn->hcd", q, k) * params["attention.temperature"].reshape(heads, 1, 1)
    attn = np.exp(logits - logits.max(axis=-1, keepdims=True))
    attn = attn / attn.sum(axis=-1, keepdims=True)
    o = np.einsum("hcd,hdn->hcn", attn, v).reshape(c2, h, w)
    return feature + _np_conv(o, params["project_out.weight"])


def test_self_attention_fusion_matches_a_numpy_evaluation_of_its_formula() -> None:
    adapter = DinoRestoreAdapter(3, 4, fusion="self_attention", heads=2).double()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in adapter.parameters():  # every weight set, the zero-initialised projection included
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
        adapter.attention.temperature.copy_(torch.tensor([[[0.7]], [[1.9]]], dtype=torch.float64))
    feature = torch.randn(1, 4, 3, 5, generator=gen, dtype=torch.float64)
    guide = torch.randn(1, 3, 3, 5, generator=gen, dtype=torch.float64)
    params = {n: p.detach().numpy() for n, p in adapter.named_parameters()}
    assert set(params) == {
        "adaption.conv.weight", "adaption.conv.bias", "adaption.proj.weight", "adaption.proj.bias",
        "attention.norm.body.weight", "attention.norm.body.bias", "attention.qkv.weight",
        "attention.qkv_dwconv.weight", "attention.temperature", "project_out.weight",
    }  # fmt: skip
    expected = _np_self_attention_fusion(params, feature[0].numpy(), guide[0].numpy(), heads=2)
    out = adapter(feature, guide)[0].detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    assert np.abs(expected - feature[0].numpy()).max() > 0.1  # the fusion did change the feature


def test_adapter_builds_from_the_registry() -> None:
    adapter = build("adapter", {"type": "dino_restore", "guide_channels": 12, "channels": 8, "fusion": "concat"})
    assert isinstance(adapter, DinoRestoreAdapter) and adapter.fusion_type == "concat"


def _channel_layer_norm(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """WithBias LayerNorm over the channels of each pixel, from its formula."""
    mean = x.mean(dim=1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * norm.body.weight[:, None, None] + norm.body.bias[:, None, None]


def _conv(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    return torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=conv.padding, groups=conv.groups)


def _cross_attention_by_hand(adapter: DinoRestoreAdapter, query_map: torch.Tensor, context: torch.Tensor):
    """q from ``query_map``; k, v from ``context``; per head softmax(temperature * q^ k^T) v over channels."""
    att = adapter.attention
    q = _conv(_conv(_channel_layer_norm(query_map, att.norm_q), att.q), att.q_dwconv)
    kv = _conv(_conv(_channel_layer_norm(context, att.norm_kv), att.kv), att.kv_dwconv)
    k, v = kv[:, :8], kv[:, 8:]
    b, c, h, w = q.shape
    heads, per = adapter.heads, c // adapter.heads
    out = torch.empty_like(q)
    for i in range(b):
        for head in range(heads):
            rows = slice(head * per, (head + 1) * per)
            qh, kh, vh = (t[i, rows].reshape(per, h * w) for t in (q, k, v))
            qh = qh / qh.norm(dim=1, keepdim=True).clamp_min(1e-12)
            kh = kh / kh.norm(dim=1, keepdim=True).clamp_min(1e-12)
            scores = torch.exp(att.temperature[head, 0, 0] * (qh @ kh.T))
            out[i, rows] = ((scores / scores.sum(dim=1, keepdim=True)) @ vh).reshape(per, h, w)
    return _conv(out, adapter.project_out)


@pytest.mark.parametrize("query", ["guide", "feature"])
def test_cross_attention_fusion_equals_the_attention_by_hand(query) -> None:
    """fusion: attention (named, not the default): the query side gives q, the other side k and v."""
    torch.manual_seed(4)
    adapter = DinoRestoreAdapter(12, 8, fusion="attention", query=query, heads=2)
    with torch.no_grad():
        for p in adapter.parameters():  # no unit norms, unit temperatures or zero projection
            p.add_(0.3 * torch.randn_like(p))
    feature, guide = torch.randn(2, 8, 5, 6), torch.randn(2, 12, 3, 3)
    g = adapter.adaption(guide, (5, 6))
    sides = (g, feature) if query == "guide" else (feature, g)
    expected = feature + _cross_attention_by_hand(adapter, *sides)
    torch.testing.assert_close(adapter(feature, guide), expected, rtol=1e-5, atol=1e-5)
    swapped = feature + _cross_attention_by_hand(adapter, *sides[::-1])
    assert (swapped - expected).abs().max() > 1e-2  # the sides matter at this size


def test_concat_fusion_equals_its_formula() -> None:
    torch.manual_seed(5)
    adapter = DinoRestoreAdapter(12, 8, fusion="concat", bias=True)
    _perturb_zero_init(adapter)
    feature, guide = torch.randn(1, 8, 4, 4), torch.randn(1, 12, 2, 2)
    g = adapter.adaption(guide, (4, 4))
    w = adapter.project_out.weight[:, :, 0, 0]  # (8, 16): the first 8 inputs are the feature's
    expected = feature + torch.einsum("oc,bchw->bohw", w[:, :8], feature) + torch.einsum("oc,bchw->bohw", w[:, 8:], g)
    torch.testing.assert_close(adapter(feature, guide), expected + adapter.project_out.bias[:, None, None])
