"""The dino_ir model: its defaults, identity at init, gradients, the cost rule, errors."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from tiny_dino_ir import tiny_dino_ir

import restorekit.models.dino_ir as dino_ir_module
from restorekit import build, build_model
from restorekit.adapters.dino_restore import DinoRestoreAdapter
from restorekit.contracts import ModelAux, sum_terms
from restorekit.engine.parts import loss_type
from restorekit.engine.step import forward_loss
from restorekit.errors import BuildError
from restorekit.frozen import frozen_records, trainable_state_dict
from restorekit.fusion.concat import ConcatFusion
from restorekit.fusion.msf import MultiLayerSemanticFusion
from restorekit.tiny import TINY, tiny_backbone_spec

LOSS = {
    "type": "weighted_sum",
    "terms": [{"type": "l1", "weight": 1.0}, {"type": "dpc", "weight": 0.1, "layers": [1, 3]}],
}


def _perturb_zero_init(model) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for adapter in model.adapters.values():
            for module in adapter.zero_initialised():
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.05)


def test_build_model_gives_the_defaults() -> None:
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("dino_ir")
    assert type(model.body).__name__ == "Restormer" and model.body.config["dim"] == 48
    assert model.body.config["num_blocks"] == [4, 6, 6, 8] and model.body.config["heads"] == [1, 2, 4, 8]
    assert model.backbone.name == "vit_base_patch14_dinov2" and model.backbone.embed_dim == 768
    assert model.backbone.frozen and model.backbone.weights is None
    assert model.layers == [2, 5, 8, 11] and model.token_grid(128, 128) == (16, 16)
    assert isinstance(model.fusion, MultiLayerSemanticFusion)
    assert model.fusion.num_experts == 4 and model.fusion.top_k == 4 and model.fusion.out_channels == 384
    assert list(model.adapters) == ["latent", "decoder3", "decoder2"]
    widths = {p: (a.fusion_type, a.query, a.heads, a.adaption.proj.out_channels) for p, a in model.adapters.items()}
    assert widths == {
        "latent": ("self_attention", "guide", 8, 384),
        "decoder3": ("self_attention", "guide", 4, 192),
        "decoder2": ("self_attention", "guide", 2, 96),
    }
    body_params = sum(p.numel() for p in model.body.parameters())
    assert body_params == 26_126_644  # the official Restormer
    # D-R by hand: adaption 3x3 (C_f) + 1x1 (C_f -> C); self-attention over 2C channels:
    # LayerNorm 2*2C, qkv 1x1 2C*6C, depthwise 6C*9, temperature per head, projection 2C*C.
    expected = {
        point: (384 * 384 * 9 + 384) + (384 * c + c) + 4 * c + 12 * c * c + 54 * c + heads + 2 * c * c
        for point, c, heads in [("latent", 384, 8), ("decoder3", 192, 4), ("decoder2", 96, 2)]
    }
    assert {p: sum(x.numel() for x in a.parameters()) for p, a in model.adapters.items()} == expected
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_partial_specs_merge_onto_the_defaults(tmp_path) -> None:
    tiny_vit = tiny_backbone_spec({"type": "dinov2", "size": "s"}, depth=12)
    backbone = build("backbone", tiny_vit)
    path = tmp_path / "tiny_dinov2.pth"
    torch.save(backbone.model.state_dict(), path)
    model = build_model(
        "dino_ir", fusion={"type": "concat"}, body=TINY["body"]["restormer"], fusion_channels=16,
        backbone={**tiny_vit, "weights": str(path)},
    )  # fmt: skip
    assert isinstance(model.fusion, ConcatFusion) and model.fusion.out_channels == 16
    assert model.backbone.weights == str(path) and model.body.config["dim"] == 8
    assert torch.equal(model.backbone.model.blocks[0].attn.qkv.weight, backbone.model.blocks[0].attn.qkv.weight)


def test_warns_once_per_process_when_the_backbone_is_random(monkeypatch) -> None:
    monkeypatch.setattr(dino_ir_module, "_warned_random_backbone", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_dino_ir()
        tiny_dino_ir()
    messages = [str(w.message) for w in caught if "randomly initialised" in str(w.message)]
    assert len(messages) == 1


@pytest.mark.parametrize(
    "adapter",
    [{}, {"fusion": "cross_attention"}, {"fusion": "concat"}, {"fusion": "add"},
     {"fusion": "cross_attention", "query": "feature"}],
)  # fmt: skip
@pytest.mark.parametrize("fusion", ["msf", "concat"])
def test_at_init_the_output_is_exactly_the_body_output(adapter, fusion) -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir(adapter=adapter, fusion={"type": fusion}).eval()
    lq = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(lq), model.body(lq))
        _perturb_zero_init(model)
        assert not torch.equal(model(lq), model.body(lq))


def test_gradients_reach_every_trainable_parameter_and_never_the_backbone() -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir(fusion={"top_k": 2})  # sparse gating still trains every expert's gate
    loss = build("loss", LOSS)
    loss.bind(model)
    lq, gt = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)

    def grads() -> dict[str, bool]:
        model.zero_grad(set_to_none=True)
        forward_loss(model, model, loss, lq, gt).total.backward()
        return {
            n: p.grad is not None and bool(p.grad.abs().sum() > 0)
            for n, p in model.named_parameters()
            if p.requires_grad
        }

    assert all(p.grad is None for p in model.backbone.parameters())
    at_init = grads()
    # At init only the zero-initialised projections (and the body) can learn: everything
    # upstream of a zero layer gets an exactly zero gradient.
    zero = {
        f"adapters.{p}.{n}"
        for p, a in model.adapters.items()
        for n, _ in a.named_parameters()
        if n.startswith("project_out")
    }
    upstream = [n for n in at_init if n.startswith(("fusion.", "adapters.")) and n not in zero]
    assert all(at_init[n] for n in zero) and not any(at_init[n] for n in upstream)
    assert all(v for n, v in at_init.items() if n.startswith("body."))
    _perturb_zero_init(model)
    after = grads()
    # With top_k=2 an expert no sample picked has gate 0: its own weights get no gradient.
    picked = (model.fusion.last_gate > 0).any(dim=0)
    missing = [
        n
        for n, ok in after.items()
        if not ok and not (n.startswith("fusion.experts.") and not picked[int(n.split(".")[2])])
    ]
    assert missing == []
    assert all(p.grad is None for p in model.backbone.parameters())


def test_one_full_pass_on_lq_and_two_partial_passes_per_training_step(monkeypatch) -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir()
    loss = build("loss", LOSS)
    loss.bind(model)
    backbone = model.backbone
    passes: list[tuple[list[int], bool, bool]] = []
    blocks_run = [0] * backbone.num_layers
    original = backbone.forward

    def counting_forward(x, layers, grid=None):
        passes.append((sorted(layers), torch.is_grad_enabled(), x.requires_grad))
        return original(x, layers, grid)

    monkeypatch.setattr(backbone, "forward", counting_forward)
    for i, block in enumerate(backbone.model.blocks):
        block.register_forward_hook(lambda *_, i=i: blocks_run.__setitem__(i, blocks_run[i] + 1))
    lq, gt = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    restored, aux = model(lq, return_aux=True)
    sum_terms(loss(restored, gt, lq=lq, aux=aux), restored).backward()
    assert passes == [
        ([1, 2, 3, 5, 8, 11], False, False),  # guidance on lq, keeping DPC's layers
        ([1, 3], False, False),  # the target, without gradients
        ([1, 3], True, True),  # the output, with gradients, only up to block 3
    ]
    assert blocks_run == [3, 3, 3, 3] + [1] * 8
    assert aux.lq_features[1].shape[-2:] == (6, 6) == aux.grid


def test_inference_keeps_only_the_guidance_layers() -> None:
    model = tiny_dino_ir()
    model.request_backbone_layers([1, 3])
    _, aux = model(torch.rand(1, 3, 16, 16), return_aux=True)
    assert sorted(aux.lq_features) == [1, 2, 3, 5, 8, 11]
    assert isinstance(aux, ModelAux) and aux.grid == (2, 2) and aux.guide_pass is model.guide_pass
    assert aux.gate.shape == (1, 4) and model.fusion.aux_loss is None and aux.backbone is model.backbone


@pytest.mark.parametrize("size", [(48, 48), (37, 50)])
@pytest.mark.parametrize("rule", ["stride", "native"])
def test_guide_grid_rules_and_odd_sizes(size, rule) -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir(guide_grid=rule)
    _perturb_zero_init(model)
    lq = torch.rand(1, 3, *size)
    restored, aux = model(lq, return_aux=True)
    assert restored.shape == lq.shape
    expected = tuple(-(-s // 8) for s in size) if rule == "stride" else tuple(-(-s // 14) for s in size)
    assert aux.guide.shape[-2:] == expected
    assert model.token_grid(*size) == (expected if rule == "stride" else None)


def test_guide_stride_is_a_knob() -> None:
    model = tiny_dino_ir(guide_stride=4, injection_points=["decoder2", "decoder1"])
    _, aux = model(torch.rand(1, 3, 32, 32), return_aux=True)
    assert aux.guide.shape[-2:] == (8, 8) and list(model.adapters) == ["decoder2", "decoder1"]


def test_frozen_backbone_stays_out_of_checkpoints_and_training_mode() -> None:
    model = tiny_dino_ir().train()
    assert not model.backbone.training and model.body.training
    state = trainable_state_dict(model)
    assert state and not any(k.startswith("backbone.") for k in state)
    assert "backbone" in frozen_records(model)


@pytest.mark.parametrize("loss_spec", [{"type": "l1"}, {"type": "weighted_sum", "terms": [{"type": "l1"}]}])
def test_msf_load_balance_reaches_the_training_loss_whatever_the_loss(loss_spec) -> None:
    model = tiny_dino_ir(fusion={"load_balance_weight": 0.01})
    loss = build("loss", loss_spec)
    lq, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    result = forward_loss(model, model, loss, lq, gt, loss_type(loss_spec))
    restored = model(lq)
    balance = model.fusion.aux_loss
    assert balance is not None and balance.item() > 0
    assert set(result.terms) == {"l1", "aux/fusion"}
    torch.testing.assert_close(result.total, (restored - gt).abs().mean() + balance)


def test_adapter_overrides_apply_per_point() -> None:
    model = tiny_dino_ir(adapter_overrides={"latent": {"fusion": "add"}})
    assert [a.fusion_type for a in model.adapters.values()] == ["add", "self_attention", "self_attention"]
    assert all(isinstance(a, DinoRestoreAdapter) for a in model.adapters.values())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"injection_points": ["latent", "encoder9"]}, "encoder9"),
        ({"layers": [2, 12], "backbone": {"model_kwargs": {"depth": 12}}}, r"layers \[12\] out of range"),
        ({"fusion": {"in_channels": 8}}, "set by the model"),
        ({"adapter": {"channels": 8}}, "set by the model"),
        ({"guide_grid": "auto"}, "guide_grid"),
    ],
)
def test_bad_knobs_are_build_errors(overrides, match) -> None:
    with pytest.raises(BuildError, match=match):
        tiny_dino_ir(**overrides)
    model = tiny_dino_ir()
    with pytest.raises(BuildError, match="requested backbone layers"):
        model.request_backbone_layers([40])


def test_unfrozen_backbone_knob_trains_the_backbone() -> None:
    model = tiny_dino_ir(backbone={"frozen": False, "model_kwargs": {"depth": 4}}, layers=[1, 3])
    for adapter in model.adapters.values():  # leave the zero-initialised start
        for p in adapter.parameters():
            torch.nn.init.normal_(p, std=0.1)
    model(torch.rand(1, 3, 16, 16)).square().mean().backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("size", [(41, 50), (33, 17)])
def test_the_guidance_pass_sees_the_input_padded_as_the_body_pads_it(size, monkeypatch) -> None:
    """One guide token per latent cell, over the same pixels, when H or W is no multiple of 8."""
    from restorekit.bodies.base import pad_to_multiple

    torch.manual_seed(0)
    model = tiny_dino_ir()
    seen = []
    original = model.backbone.forward

    def recording_forward(x, layers, grid=None):
        seen.append((x, grid))
        return original(x, layers, grid)

    monkeypatch.setattr(model.backbone, "forward", recording_forward)
    lq = torch.rand(1, 3, *size)
    model(lq)
    x, grid = seen[0]
    padded = pad_to_multiple(lq, 8)
    assert torch.equal(x, padded)
    latent = model.body.encode(lq)["level4"]
    assert grid == tuple(latent.shape[-2:]) == (padded.shape[-2] // 8, padded.shape[-1] // 8)


def test_dpc_reads_the_guidance_features_at_odd_sizes_as_a_fresh_pass_would() -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir()
    loss = build("loss", {"type": "dpc", "layers": [1, 3]})
    loss.bind(model)
    lq, gt, restored = (torch.rand(2, 3, 41, 50) for _ in range(3))
    _, aux = model(lq, return_aux=True)
    cached = loss(restored, gt, aux=aux)
    fresh = loss(restored, gt, lq=lq, aux=dataclasses.replace(aux, lq_features={}))
    torch.testing.assert_close(cached, fresh, rtol=1e-5, atol=1e-6)


def test_weights_cast_to_bf16_take_fp32_images() -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir().to(torch.bfloat16)
    out = model(torch.rand(1, 3, 24, 24))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_the_output_is_the_body_guided_by_each_points_adapter_of_the_fused_guide() -> None:
    """Recomposed from the parts: the backbone's ``layers`` on the stride grid of the padded input
    (one pass: a training crop fits a window), fused in the order of ``layers``, and each point's
    adapter applied to the body's feature there."""
    torch.manual_seed(0)
    model = tiny_dino_ir(layers=[5, 2], fusion={"type": "concat"}).eval()
    _perturb_zero_init(model)
    with torch.no_grad():  # LayerScale starts at 1e-5: wake the blocks so layers 2 and 5 differ
        for name, p in model.backbone.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                p.fill_(0.5)
    lq = torch.rand(1, 3, 45, 37)  # padded to 48 x 40: a 6 x 5 token grid
    padded = torch.nn.functional.pad(lq, (0, 3, 0, 3), mode="reflect")
    with torch.no_grad():
        feats = model.backbone(padded, [2, 5], (6, 5))
        guide = model.fusion([feats[5], feats[2]])
        guidance = {
            point: (lambda feature, a=model.adapters[point]: a(feature, guide)) for point in model.injection_points
        }
        expected = model.body(lq, guidance=guidance)
        torch.testing.assert_close(model(lq), expected, rtol=0, atol=1e-6)
        assert not torch.allclose(expected, model.body(lq), atol=1e-4)
        assert (feats[2] - feats[5]).abs().max() > 0.01  # so the order of the layers shows
