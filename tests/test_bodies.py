"""Restoration bodies: exact official architectures, any input size, guidance points."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit import build
from restorekit.bodies import InjectionPoint
from restorekit.bodies.base import pad_to_multiple
from restorekit.bodies.blocks import LayerNorm2d, channel_attention
from restorekit.bodies.promptir import PromptIR
from restorekit.bodies.restormer import Restormer
from restorekit.errors import BuildError
from restorekit.params import count_params, format_param_table

TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2], num_refinement_blocks=1)
TINY_PROMPTS = dict(prompt_dims=[4, 8, 8], prompt_sizes=[8, 4, 4], prompt_len=3)


def tiny(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "restormer":
        return Restormer(**TINY, **kwargs).eval()
    return PromptIR(**TINY, **TINY_PROMPTS, **kwargs).eval()


@pytest.fixture(scope="module")
def bodies() -> dict[str, torch.nn.Module]:
    return {name: tiny(name) for name in ("restormer", "promptir")}


BODY_NAMES = ["restormer", "promptir"]


# -- the official architectures at full size (meta device: no memory, no time) -------
def _meta(cls, **kwargs):
    with torch.device("meta"):
        return cls(**kwargs)


def test_full_config_parameter_counts_equal_the_official_models():
    assert count_params(_meta(Restormer)) == (26_126_644, 0)
    # The official PromptIR file counts 35,592,263 with six unused modules (215,296).
    assert count_params(_meta(PromptIR)) == (35_376_967, 0)


def test_bias_free_layernorm_drops_exactly_the_layernorm_biases():
    with_bias = _meta(Restormer)
    bias_free = _meta(Restormer, layernorm_type="BiasFree")
    norm_biases = [k for k in with_bias.state_dict() if k.endswith(".body.bias")]
    n_bias = sum(with_bias.state_dict()[k].numel() for k in norm_biases)
    assert count_params(bias_free)[0] == 26_126_644 - n_bias
    assert not any(k.endswith(".body.bias") for k in bias_free.state_dict())


@pytest.mark.parametrize(
    "cls, key, shape",
    [
        (Restormer, "patch_embed.proj.weight", (48, 3, 3, 3)),
        (Restormer, "encoder_level1.0.norm1.body.weight", (48,)),
        (Restormer, "encoder_level1.0.norm1.body.bias", (48,)),
        (Restormer, "encoder_level2.5.attn.temperature", (2, 1, 1)),
        (Restormer, "latent.7.attn.qkv_dwconv.weight", (1152, 1, 3, 3)),
        (Restormer, "latent.0.ffn.project_in.weight", (2042, 384, 1, 1)),
        (Restormer, "down3_4.body.0.weight", (96, 192, 3, 3)),
        (Restormer, "up4_3.body.0.weight", (768, 384, 3, 3)),
        (Restormer, "reduce_chan_level3.weight", (192, 384, 1, 1)),
        (Restormer, "refinement.3.ffn.project_out.weight", (96, 255, 1, 1)),
        (Restormer, "output.weight", (3, 96, 3, 3)),
        (PromptIR, "prompt3.prompt_param", (1, 5, 320, 16, 16)),
        (PromptIR, "prompt1.linear_layer.weight", (5, 96)),
        (PromptIR, "prompt2.conv3x3.weight", (128, 128, 3, 3)),
        (PromptIR, "noise_level3.attn.qkv.weight", (2112, 704, 1, 1)),
        (PromptIR, "reduce_noise_level3.weight", (192, 704, 1, 1)),
        (PromptIR, "reduce_noise_level2.weight", (192, 320, 1, 1)),
        (PromptIR, "noise_level1.norm2.body.weight", (160,)),
        (PromptIR, "up4_3.body.0.weight", (384, 192, 3, 3)),
        (PromptIR, "reduce_chan_level3.weight", (192, 288, 1, 1)),
    ],
)
def test_parameter_names_and_shapes_are_the_official_ones(cls, key, shape):
    state = _meta(cls).state_dict()
    assert tuple(state[key].shape) == shape


def test_unused_official_modules_are_not_built():
    names = {name for name, _ in _meta(PromptIR).named_children()}
    assert not names & {"chnl_reduce1", "chnl_reduce3", "reduce_noise_channel_1"}


def test_full_config_injection_points():
    expect_restormer = {"latent": (384, 8), "decoder3": (192, 4), "decoder2": (96, 2), "decoder1": (96, 1)}
    expect_promptir = {"latent": (192, 8), "decoder3": (192, 4), "decoder2": (96, 2), "decoder1": (96, 1)}
    for cls, expect in ((Restormer, expect_restormer), (PromptIR, expect_promptir)):
        points = _meta(cls).injection_points
        assert points == {k: InjectionPoint(c, s) for k, (c, s) in expect.items()}
    with pytest.raises(dataclasses.FrozenInstanceError):
        InjectionPoint(1, 1).channels = 2  # type: ignore[misc]


# -- shared blocks ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["WithBias", "BiasFree"])
def test_layernorm2d_normalises_over_channels(kind):
    torch.manual_seed(1)
    norm = LayerNorm2d(6, kind).double()
    with torch.no_grad():
        norm.body.weight.uniform_(0.5, 1.5)
        if norm.body.bias is not None:
            norm.body.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64) * 3 + 1
    mu = x.mean(1, keepdim=True)
    sd = (x.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()
    w = norm.body.weight[:, None, None]
    if kind == "WithBias":
        expect = (x - mu) / sd * w + norm.body.bias[:, None, None]
    else:
        expect = x / sd * w  # the official bias-free form keeps the mean
    torch.testing.assert_close(norm(x), expect)
    assert (kind == "WithBias") == hasattr(norm.body.bias, "shape")


def test_channel_attention_matches_per_head_softmax_over_channels():
    torch.manual_seed(2)
    b, heads, cq, ck, h, w = 2, 2, 6, 4, 3, 5
    q = torch.randn(b, cq, h, w, dtype=torch.float64)
    k = torch.randn(b, ck, h, w, dtype=torch.float64)
    v = torch.randn(b, ck, h, w, dtype=torch.float64)
    temp = torch.tensor([0.5, 2.0], dtype=torch.float64).view(heads, 1, 1)
    out = channel_attention(q, k, v, heads, temp)
    assert out.shape == (b, cq, h, w)
    for n in range(b):
        for head in range(heads):
            qs = q[n, head * 3 : (head + 1) * 3].reshape(3, -1)
            ks = k[n, head * 2 : (head + 1) * 2].reshape(2, -1)
            vs = v[n, head * 2 : (head + 1) * 2].reshape(2, -1)
            qs, ks = qs / qs.norm(dim=1, keepdim=True), ks / ks.norm(dim=1, keepdim=True)
            attn = torch.softmax(qs @ ks.T * temp[head, 0, 0], dim=1)
            torch.testing.assert_close(out[n, head * 3 : (head + 1) * 3].reshape(3, -1), attn @ vs)


# -- any input size ----------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40))
def test_pad_to_multiple_pads_bottom_right_and_keeps_the_input(h, w):
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    padded = pad_to_multiple(x)
    assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    assert padded.shape[-2] - h < 8 and padded.shape[-1] - w < 8
    torch.testing.assert_close(padded[..., :h, :w], x)


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(BODY_NAMES),
    batch=st.integers(1, 2),
    h=st.integers(1, 37),
    w=st.integers(1, 37),
)
def test_output_has_the_input_shape_for_any_size(bodies, name, batch, h, w):
    x = torch.rand(batch, 3, h, w)
    with torch.no_grad():
        out = bodies[name](x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", BODY_NAMES)
def test_cropped_output_equals_running_on_the_padded_input(bodies, name):
    body = bodies[name]
    x = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        direct = body(x)
        on_padded = body(pad_to_multiple(x))[..., :13, :21]
    torch.testing.assert_close(direct, on_padded)


@pytest.mark.parametrize("name", BODY_NAMES)
def test_dtype_and_batch_are_preserved(name):
    body = tiny(name)
    x64 = torch.rand(2, 3, 11, 9, dtype=torch.float64)
    with torch.no_grad():
        out = body(x64)  # float32 weights, float64 input: computed in float32, returned float64
        assert out.dtype == torch.float64 and out.shape == x64.shape
        body64 = body.double()
        out64 = body64(x64)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, out, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        body(torch.rand(3, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("name", BODY_NAMES)
def test_encode_returns_each_encoder_level(bodies, name):
    body = bodies[name]
    feats = body.encode(torch.rand(2, 3, 17, 10))  # padded to 24 x 16
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "level1": (2, 8, 24, 16),
        "level2": (2, 16, 12, 8),
        "level3": (2, 32, 6, 4),
        "level4": (2, 64, 3, 2),
    }


# -- guidance ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BODY_NAMES)
def test_identity_guidance_equals_the_plain_network(bodies, name):
    body = bodies[name]
    x = torch.rand(2, 3, 19, 12)
    identity = {p: (lambda f: f) for p in body.injection_points}
    with torch.no_grad():
        plain = body(x)
        assert torch.equal(body(x, guidance=None), plain)
        assert torch.equal(body(x, guidance={}), plain)
        assert torch.equal(body(x, guidance=identity), plain)
        assert torch.equal(body(x, guidance={"latent": lambda f: f.clone()}), plain)


@settings(max_examples=8, deadline=None)
@given(name=st.sampled_from(BODY_NAMES), h=st.integers(1, 30), w=st.integers(1, 30))
def test_guidance_callables_see_the_documented_shapes(bodies, name, h, w):
    body = bodies[name]
    seen: dict[str, tuple[int, ...]] = {}

    def record(point):
        def fn(feature):
            seen[point] = tuple(feature.shape)
            return feature

        return fn

    with torch.no_grad():
        body(torch.rand(1, 3, h, w), guidance={p: record(p) for p in body.injection_points})
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    assert list(seen) == ["latent", "decoder3", "decoder2", "decoder1"]  # forward order
    for point, spec in body.injection_points.items():
        assert seen[point] == (1, spec.channels, hp // spec.stride, wp // spec.stride)


@pytest.mark.parametrize("name", BODY_NAMES)
def test_guidance_replaces_the_feature(bodies, name):
    body = bodies[name]
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        plain = body(x)
        for point in body.injection_points:
            changed = body(x, guidance={point: lambda f: f + 1.0})
            assert not torch.allclose(changed, plain), point


def test_guidance_errors_name_the_point(bodies):
    body = bodies["restormer"]
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="'decoder4'.*latent, decoder3, decoder2, decoder1"):
        body(x, guidance={"decoder4": lambda f: f})
    with pytest.raises(ValueError, match="'decoder2' must return a tensor of shape"):
        body(x, guidance={"decoder2": lambda f: f[:, :1]})


# -- training --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BODY_NAMES)
def test_every_parameter_gets_a_gradient(name):
    body = tiny(name).train()
    x = torch.rand(2, 3, 16, 16)
    (body(x) - x).abs().mean().backward()
    for pname, p in body.named_parameters():
        assert p.requires_grad, pname
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


# -- building ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["body", "model"])
@pytest.mark.parametrize("name", BODY_NAMES)
def test_built_from_the_registry(kind, name):
    spec = {"type": name, **TINY, **(TINY_PROMPTS if name == "promptir" else {})}
    part = build(kind, spec)
    assert type(part).__name__ == {"restormer": "Restormer", "promptir": "PromptIR"}[name]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(heads=[3, 1, 2, 2]), r"heads\[0\].*8 channels"),
        (dict(num_blocks=[1, 1, 1]), "num_blocks"),
        (dict(layernorm_type="Bias"), "layernorm_type"),
        (dict(dim=7), "dim"),
        (dict(out_channels=1), "global_residual"),
    ],
)
@pytest.mark.parametrize("name", BODY_NAMES)
def test_bad_knobs_raise_build_errors_naming_the_argument(name, kwargs, message):
    spec = {"type": name, **TINY, **(TINY_PROMPTS if name == "promptir" else {}), **kwargs}
    with pytest.raises(BuildError, match=message):
        build("body", spec)


def test_promptir_prompt_fusion_heads_are_checked():
    with pytest.raises(BuildError, match=r"heads\[2\] \(fusion after prompt1\)"):
        PromptIR(**TINY, prompt_dims=[3, 8, 8], prompt_sizes=[4, 4, 4])


def test_dual_pixel_restormer_takes_six_channels_and_has_no_residual():
    body = tiny("restormer", in_channels=6, dual_pixel_task=True)
    assert body.global_residual is False and hasattr(body, "skip_conv")
    with torch.no_grad():
        out = body(torch.rand(1, 6, 10, 12))
    assert out.shape == (1, 3, 10, 12)


@pytest.mark.parametrize("name", BODY_NAMES)
def test_param_table_lists_the_official_stages(bodies, name):
    table = format_param_table(bodies[name])
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    for stage in ("patch_embed", "encoder_level1", "latent", "decoder_level1", "refinement", "output"):
        assert stage in rows
    if name == "promptir":
        assert {"prompt1", "noise_level3", "reduce_noise_level3"} <= set(rows)
    total = sum(p.numel() for p in bodies[name].parameters())
    assert rows["total"] == [f"{total:,d}", "0"]


def test_show_params_prints_the_body_parts(tmp_path, capsys):
    from restorekit.cli import main

    recipe = tmp_path / "tiny_restormer.yaml"
    recipe.write_text(
        "name: tiny\nmodel:\n  type: restormer\n  dim: 8\n  num_blocks: [1, 1, 1, 1]\n"
        "  heads: [1, 1, 2, 2]\n  num_refinement_blocks: 1\n"
    )
    assert main(["show", str(recipe), "--params"]) == 0
    out = capsys.readouterr().out
    total = sum(p.numel() for p in Restormer(**TINY).parameters())
    assert "encoder_level1" in out and "refinement" in out
    assert f"total {total:>30,d} {0:>14,d}".split() == out.strip().splitlines()[-1].split()


def test_prompt_block_mixes_prompts_by_the_feature():
    from restorekit.bodies.promptir import PromptGenBlock

    torch.manual_seed(3)
    block = PromptGenBlock(prompt_dim=4, prompt_len=3, prompt_size=5, lin_dim=6).double()
    x = torch.randn(2, 6, 7, 9, dtype=torch.float64)
    out = block(x)
    assert out.shape == (2, 4, 7, 9)
    # Equal prompts: the mix no longer matters, the output is the one prompt resized.
    with torch.no_grad():
        block.prompt_param.copy_(block.prompt_param[:, :1].expand_as(block.prompt_param))
    one = torch.nn.functional.interpolate(block.prompt_param[:, 0], size=(7, 9), mode="bilinear")
    torch.testing.assert_close(block(x), block.conv3x3(one).expand(2, -1, -1, -1))


@pytest.mark.parametrize("name", BODY_NAMES)
def test_same_output_on_every_device(name, device):
    body = tiny(name)
    x = torch.rand(2, 3, 21, 14)
    with torch.no_grad():
        expect = body(x)
        got = body.to(device)(x.to(device)).cpu()
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["restormer", "promptir"])
def test_grad_checkpointing_gives_the_same_output_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    plain = tiny(name).train()
    ckpt = tiny(name, grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    assert list(ckpt.state_dict()) == list(plain.state_dict())  # released weights still load
    x = torch.rand(1, 3, 16, 16)
    for model in (plain, ckpt):
        model(x).square().mean().backward()
    for (key, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=key)
