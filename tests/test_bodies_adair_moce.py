"""AdaIR and MoCE-IR bodies: official sizes and names, any input size, released layouts, guidance."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit import build, build_model
from restorekit.bodies.adair import AdaIR
from restorekit.bodies.frequency import FreModule
from restorekit.bodies.moce_blocks import FFTAttention, RoutingFunction, expert_ranks
from restorekit.bodies.moce_ir import MoCEIR, MoCEIRS
from restorekit.errors import BuildError
from restorekit.params import count_params
from restorekit.tiny import tiny_model_spec, tiny_spec

BODIES = ["adair", "moce_ir", "moce_ir_s"]


def tiny_body_spec(name: str, **knobs) -> dict:
    return {**tiny_spec("body", {"type": name}), **knobs}


def tiny(name: str, seed: int = 0, **knobs) -> torch.nn.Module:
    """A tiny body, its weights perturbed so that no module is at its identity start."""
    torch.manual_seed(seed)
    body = build("body", tiny_body_spec(name, **knobs))
    with torch.no_grad():
        for p in body.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return body.eval()


def run(body: torch.nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    torch.manual_seed(7)  # MoCE-IR's official inference draws routing noise
    with torch.no_grad():
        return body(x, **kwargs)


# -- the official architectures at full size (meta device) ------------------------------------
def _meta(cls, **kwargs):
    with torch.device("meta"):
        return cls(**kwargs)


@functools.cache
def _meta_shapes(cls) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in _meta(cls).state_dict().items()}


def test_full_size_parameter_counts_equal_the_official_models():
    # AdaIR's official file counts 28,784,824; 43,098 of them never get a gradient there
    # (unused conv/score_gen, rate_conv behind an integer cast) and are not trainable here.
    assert count_params(_meta(AdaIR)) == (28_741_726, 43_098)
    assert count_params(_meta(MoCEIR)) == (25_353_796, 0)
    assert count_params(_meta(MoCEIRS)) == (11_477_752, 0)
    with torch.device("meta"):
        assert count_params(build("body", {"type": "moce_ir_s"})) == (11_477_752, 0)


@pytest.mark.parametrize(
    "cls, key, shape",
    [
        (AdaIR, "fre1.conv1.weight", (384, 3, 3, 3)),
        (AdaIR, "fre1.channel_cross_l.kv_dwconv.weight", (768, 1, 3, 3)),
        (AdaIR, "fre2.frequency_refine.SpatialGate.spatial.weight", (1, 2, 7, 7)),
        (AdaIR, "fre2.frequency_refine.ChannelGate.mlp.2.weight", (192, 12, 1, 1)),
        (AdaIR, "fre3.rate_conv.0.weight", (12, 96, 1, 1)),
        (AdaIR, "fre3.score_gen.bias", (2,)),
        (AdaIR, "fre3.para1", (96, 1, 1)),
        (AdaIR, "reduce_chan_level3.weight", (192, 384, 1, 1)),
        (MoCEIR, "freq_embed.high_conv.0.conv.weight", (384, 1, 3, 3)),
        (MoCEIR, "freq_embed.mlp.2.weight", (384, 768)),
        (MoCEIR, "enc.0.0.layers.3.mixer.qkv.bias", (144,)),
        (MoCEIR, "enc.2.1.body.0.weight", (96, 192, 3, 3)),
        (MoCEIR, "latent.layers.7.norms.1.body.bias", (384,)),
        (MoCEIR, "dec.0.0.body.0.weight", (768, 384, 3, 3)),
        (MoCEIR, "dec.0.1.weight", (192, 384, 1, 1)),
        (MoCEIR, "dec.0.2.layers.3.adapter.experts.3.0.body.kv_dwconv.weight", (384, 1, 7, 7)),
        (MoCEIR, "dec.2.2.layers.1.adapter.experts.0.0.proj.2.weight", (48, 6, 1, 1)),
        (MoCEIR, "dec.1.2.layers.0.adapter.routing.freq_gate.weight", (4, 384)),
        (MoCEIR, "dec.1.2.layers.0.adapter.routing.complexity", (4,)),
        (MoCEIR, "dec.1.2.layers.2.mixer.kv_dwconv.weight", (192, 1, 7, 7)),
        (MoCEIR, "dec.2.2.layers.1.proj.0.bias", (48,)),
        (MoCEIR, "refinement.layers.3.ffn.project_out.weight", (48, 96, 1, 1)),
        (MoCEIR, "output.weight", (3, 48, 3, 3)),
    ],
)
def test_official_parameter_names_and_shapes(cls, key, shape):
    assert _meta_shapes(cls)[key] == shape


def test_moce_ir_decoder_depths_follow_the_official_order():
    """``num_dec_blocks`` lists levels 1, 2, 3 (the official code walks it backwards)."""
    keys = _meta_shapes(MoCEIR)
    depth = [len({k.split(".")[4] for k in keys if k.startswith(f"dec.{i}.2.layers.")}) for i in range(3)]
    assert depth == [4, 4, 2]


def test_expert_ranks_spread_from_an_eighth_to_the_full_width():
    assert expert_ranks(48, 2, 4, "spread") == [6, 12, 24, 48]
    assert expert_ranks(48, 2, 4, "lin") == [2, 3, 4, 5]


# -- any input size ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bodies() -> dict[str, torch.nn.Module]:
    return {name: tiny(name) for name in BODIES}


@settings(max_examples=6, deadline=None)
@given(name=st.sampled_from(BODIES), height=st.integers(1, 41), width=st.integers(1, 41))
def test_any_size_gives_the_input_size(bodies, name, height, width):
    x = torch.rand(1, 3, height, width)
    out = run(bodies[name], x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", BODIES)
def test_injection_points_have_the_declared_channels_and_strides(bodies, name):
    body = bodies[name]
    x = torch.rand(1, 3, 21, 30)  # padded to 24 x 32
    seen = {}

    def record(point):
        def fn(feature):
            seen[point] = tuple(feature.shape[1:])
            return feature + 0.5

        return fn

    points = body.injection_points
    assert {"latent", "decoder3", "decoder2", "decoder1"} <= set(points)
    guided = run(body, x, guidance={p: record(p) for p in points})
    for point, spec in points.items():
        assert seen[point] == (spec.channels, 24 // spec.stride, 32 // spec.stride)
    assert not torch.allclose(guided, run(body, x))


@pytest.mark.parametrize("name", BODIES)
def test_no_guidance_equals_the_plain_network(bodies, name):
    body, x = bodies[name], torch.rand(2, 3, 16, 24)
    plain = run(body, x)
    assert torch.equal(run(body, x, guidance={}), plain)
    assert torch.equal(run(body, x, guidance={p: (lambda f: f) for p in body.injection_points}), plain)


@pytest.mark.filterwarnings("ignore:dino_ir. the .* backbone is randomly initialised")
@pytest.mark.parametrize("name", ["adair", "moce_ir"])
def test_dino_ir_runs_on_the_body_and_starts_as_the_plain_body(name):
    body = {"type": name, **({"routing_noise_at_eval": False} if name == "moce_ir" else {})}
    spec = tiny_model_spec({"type": "dino_ir", "body": body,
                            "injection_points": ["latent", "decoder3", "decoder2", "decoder1"]})  # fmt: skip
    torch.manual_seed(0)
    model = build_model(spec).eval()
    lq = torch.rand(1, 3, 20, 28)
    assert torch.equal(run(model, lq), run(model.body, lq))  # the D-R adapters start at zero
    model.train()
    model(torch.rand(2, 3, 24, 24)).mean().backward()
    zero_started = [m for adapter in model.adapters.values() for m in adapter.zero_initialised()]
    assert zero_started and all(m.weight.grad is not None for m in zero_started)


# -- released weights ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", BODIES)
def test_released_lightning_checkpoint_loads_through_weights(tmp_path: Path, name):
    """Both repositories release Lightning .ckpt files: 'state_dict' with the 'net.' prefix."""
    source = tiny(name, seed=0)
    ckpt = {
        "epoch": 149,
        "global_step": 667_500,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {f"net.{k}": v for k, v in source.state_dict().items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-4, "params": [0]}]}],
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    x = torch.rand(1, 3, 19, 26)
    fresh = tiny(name, seed=1)
    assert not torch.equal(run(fresh, x), run(source, x))
    loaded = build("body", {**tiny_body_spec(name), "weights": str(path)}).eval()
    assert torch.equal(run(loaded, x), run(source, x))
    report = fresh.load_weights(path)
    assert report.source_key == "state_dict" and report.loaded == len(source.state_dict())


# -- training: gradients and the balance loss -------------------------------------------------------
def test_adair_every_trainable_parameter_gets_a_gradient():
    body = tiny("adair").train()
    body(torch.rand(2, 3, 24, 32)).square().mean().backward()
    for name, p in body.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    frozen = {n.split(".", 1)[1].split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    assert frozen == {"conv", "score_gen", "rate_conv"}


def test_moce_ir_gradients_reach_every_parameter_its_routes_used():
    body = tiny("moce_ir").train()
    torch.manual_seed(0)
    out = body(torch.rand(4, 3, 24, 32))
    (out.square().mean() + body.aux_loss).backward()
    chosen = {}
    for i, (_, _, group) in enumerate(body.dec):
        for j, block in enumerate(group.layers):
            chosen[f"dec.{i}.2.layers.{j}."] = set(block.adapter.last_indices.flatten().tolist())
    for name, p in body.named_parameters():
        if ".adapter.experts." not in name:
            assert p.grad is not None, name
            continue
        prefix, rest = name.split("adapter.experts.")
        assert (p.grad is not None) == (int(rest.split(".")[0]) in chosen[prefix]), name


def test_moce_ir_balance_loss_is_its_auxiliary_loss_in_training_only():
    body = tiny("moce_ir").train()
    body(torch.rand(3, 3, 16, 16))
    adapters = [b.adapter for _, _, g in body.dec for b in g.layers]
    expected = 0.01 * torch.stack([a.loss for a in adapters]).mean()
    assert body.aux_loss.dim() == 0 and torch.allclose(body.aux_loss, expected)
    assert body.aux_loss.requires_grad
    body.eval()
    run(body, torch.rand(1, 3, 16, 16))
    assert body.aux_loss is None
    off = tiny("moce_ir", balance_loss_weight=0.0).train()
    off(torch.rand(2, 3, 16, 16))
    assert off.aux_loss is None


def _cv_squared(values: list[float]) -> float:
    """Coefficient of variation squared, the sample (n - 1) standard deviation as torch.std."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return var / (mean + 1e-8) ** 2


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v - max(row)) for v in row]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("with_complexity", [False, True])
def test_moce_router_top_k2_gates_and_balance_loss_by_hand(monkeypatch, with_complexity):
    """Noisy top-2 gating and 0.5 cv^2(importance) + 0.5 cv^2(load), in plain python on 3 images."""
    complexity = torch.tensor([1.0, 2.0, 3.0, 4.0])
    router = RoutingFunction(2, 1, 4, 2, complexity, use_complexity_bias=with_complexity).train()
    weight = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 0.5]]
    features = [[0.2, 0.9], [1.0, -0.3], [0.4, 0.4]]
    noise = [[0.3, -1.0, 0.0, 2.0], [-0.5, 0.5, 1.0, 0.0], [0.0, 0.0, -2.0, 1.0]]
    with torch.no_grad():
        router.gate[2].weight.copy_(torch.tensor(weight))
        router.freq_gate.weight.copy_(torch.tensor([[0.1], [0.0], [-0.1], [0.2]]))
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.tensor(noise, dtype=t.dtype))
    x = torch.tensor(features)[:, :, None, None].expand(3, 2, 3, 3)  # average pooling gives the features back
    freq = torch.ones(3, 1)
    gates, indices, balance = router(x, freq)

    std = 1 / 4
    logits = [[sum(w * f for w, f in zip(wr, feat)) + fb for wr, fb in zip(weight, (0.1, 0.0, -0.1, 0.2))]
              for feat in features]  # fmt: skip
    noisy = [[v + std * n for v, n in zip(lr, nr)] for lr, nr in zip(logits, noise)]
    want_gates, want_idx, load_p = [], [], []
    for lr, nr in zip(logits, noisy):
        scores = _softmax(nr)
        top = sorted(range(4), key=lambda e: -scores[e])[:2]
        want_idx.append(top)
        want_gates.append([scores[e] if e in top else 0.0 for e in range(4)])
        threshold = nr[top[1]]  # the k-th noisy logit
        load_p.append([1 - 0.5 * (1 + math.erf((threshold - v) / std / math.sqrt(2))) for v in lr])
    importance = [sum(_softmax(lr)[e] for lr in logits) for e in range(4)]
    if with_complexity:
        importance = [v * c / 4.0 for v, c in zip(importance, (1.0, 2.0, 3.0, 4.0))]  # scaled by the max
    load = [sum(p[e] for p in load_p) / 3 for e in range(4)]
    expected = 0.5 * _cv_squared(importance) + 0.5 * _cv_squared(load)

    assert indices.tolist() == want_idx and indices.shape == (3, 2)
    torch.testing.assert_close(gates, torch.tensor(want_gates), rtol=1e-5, atol=1e-7)
    assert balance.item() == pytest.approx(expected, rel=1e-5)
    router.eval()
    assert router(x, freq)[2] is None  # no balance loss at inference


def test_moce_ir_inference_noise_follows_the_seed_or_is_off():
    x = torch.rand(1, 3, 16, 16)
    noisy = tiny("moce_ir")
    assert torch.equal(run(noisy, x), run(noisy, x))  # same seed, same routes
    quiet = tiny("moce_ir", routing_noise_at_eval=False)
    with torch.no_grad():
        torch.manual_seed(1)
        first = quiet(x)
        torch.manual_seed(2)
        assert torch.equal(quiet(x), first)


def test_moce_ir_gradient_checkpointing_gives_the_same_gradients():
    x = torch.rand(2, 3, 16, 16)
    grads = []
    for enable in (False, True):
        body = tiny("moce_ir", grad_checkpointing=enable).train()
        torch.manual_seed(4)
        (body(x).mean() + body.aux_loss).backward()
        grads.append({n: p.grad for n, p in body.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])


# -- the frequency pieces against direct transcriptions of the official procedures ------------------
def test_adair_bands_equal_the_official_shifted_mask_procedure():
    torch.manual_seed(0)
    module = FreModule(dim=16, num_heads=1)
    with torch.no_grad():  # thresholds from each image's mean: about 0.3, 0.85 and 1 for these offsets
        module.rate_conv[0].weight.fill_(1 / 16)
        module.rate_conv[2].weight.fill_(5.0)
    offsets = torch.tensor([-1.0, 0.5, 2.0]).view(3, 1, 1, 1)
    x = torch.randn(3, 16, 260, 400) + offsets
    high, low = module.bands(x)
    threshold = torch.sigmoid(module.rate_conv(F.adaptive_avg_pool2d(x, 1)))
    h, w = x.shape[-2:]
    mask = torch.zeros_like(x)
    for i in range(x.shape[0]):
        hh, ww = int(h // 128 * threshold[i, 0]), int(w // 128 * threshold[i, 1])
        mask[i, :, h // 2 - hh : h // 2 + hh, w // 2 - ww : w // 2 + ww] = 1
    assert [bool(m.any()) for m in mask] == [False, True, True]
    shift = (h // 2, w // 2)
    spectrum = torch.roll(torch.fft.fft2(x, norm="forward"), shifts=shift, dims=(2, 3))
    back = [torch.fft.ifft2(torch.roll(spectrum * m, shifts=(-shift[0], -shift[1]), dims=(2, 3)), norm="forward").abs()
            for m in (1 - mask, mask)]  # fmt: skip
    assert torch.allclose(high, back[0], atol=1e-5) and torch.allclose(low, back[1], atol=1e-5)
    small = torch.randn(2, 16, 127, 300)
    high, low = module.bands(small)
    assert torch.equal(low, torch.zeros_like(small)) and torch.equal(high, small.abs())


def test_fft_attention_equals_a_per_patch_circular_convolution():
    torch.manual_seed(0)
    attention = FFTAttention(dim=2, patch_size=4)
    x = torch.randn(1, 2, 6, 7)
    q = attention.q_dwconv(attention.q(x))
    k, v = attention.kv_dwconv(attention.kv(x)).chunk(2, dim=1)
    q, k = (F.pad(t, (0, 1, 0, 2)) for t in (q, k))  # to 8 x 8
    conv = torch.zeros_like(q)
    for r in range(8):
        for c in range(8):
            pr, pc = r // 4 * 4, c // 4 * 4
            for a in range(4):
                for b in range(4):
                    src = q[..., pr + a, pc + b] * k[..., pr + (r - a) % 4, pc + (c - b) % 4]
                    conv[..., r, c] += src
    expected = attention.proj_out(attention.norm(conv[..., :6, :7]) * v)
    assert torch.allclose(attention(x), expected, atol=1e-5)


# -- bad knobs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, knobs, match",
    [
        ("adair", {"dim": 6}, "dim must be >= 8"),
        ("adair", {"heads": [1, 1, 5, 1]}, "heads\\[2\\]"),
        ("moce_ir", {"num_dec_blocks": [1, 1]}, "num_dec_blocks"),
        ("moce_ir", {"top_k": 5}, "top_k"),
        ("moce_ir", {"rank_type": "wide"}, "rank_type"),
        ("moce_ir", {"dim": 4}, "spread"),
        ("moce_ir_s", {"complexity_scale": "mean"}, "complexity_scale"),
    ],
)
def test_bad_knobs_name_the_argument(name, knobs, match):
    with pytest.raises(BuildError, match=match):
        build("body", tiny_body_spec(name, **knobs))


@pytest.mark.filterwarnings("ignore:dino_ir. the .* backbone is randomly initialised")
def test_the_engine_adds_the_balance_loss_whatever_the_recipes_loss():
    from restorekit.engine.step import forward_loss

    lq, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    body = tiny("moce_ir").train()
    step = forward_loss(body, body, build("loss", {"type": "l1"}), lq, gt, loss_name="l1")
    assert set(step.terms) == {"l1", "aux/model"} and step.terms["aux/model"] is body.aux_loss
    spec = tiny_model_spec({"type": "dino_ir", "body": {"type": "moce_ir"}})
    model = build_model(spec).train()
    step = forward_loss(model, model, build("loss", {"type": "l1"}), lq, gt, loss_name="l1")
    assert "aux/body" in step.terms and step.terms["aux/body"] is model.body.aux_loss
