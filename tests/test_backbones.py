"""Backbones: tiny ViTs built through the same timm / open_clip code paths as the real ones."""

from __future__ import annotations

import functools
import hashlib
import math
import time

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import restorekit
from restorekit.backbones.base import IMAGENET_MEAN, IMAGENET_STD, resolve_dtype
from restorekit.backbones.clip import CLIPBackbone
from restorekit.backbones.timm_vit import DINOv2Backbone, TimmBackbone, dinov2_model_name
from restorekit.errors import BuildError, CheckpointError
from restorekit.frozen import frozen_prefixes, frozen_records, iter_trainable, trainable_state_dict

TINY = {"depth": 3, "embed_dim": 32, "num_heads": 2}
TINY_CLIP = {"layers": 2, "width": 32, "head_width": 16, "patch_size": 16, "image_size": 64}


def tiny_dinov2(**kwargs) -> DINOv2Backbone:
    size = kwargs.pop("size", "s")
    model_kwargs = {**TINY, **(kwargs.pop("model_kwargs", None) or {})}
    if size == "g":  # SwiGLU MLP: width divisible by the packed hidden size
        model_kwargs["embed_dim"] = 48
    return DINOv2Backbone(size=size, img_size=56, model_kwargs=model_kwargs, **kwargs)


@functools.cache
def shared_dinov2() -> DINOv2Backbone:
    torch.manual_seed(0)
    return tiny_dinov2()


def tiny_clip(**kwargs) -> CLIPBackbone:
    return CLIPBackbone("ViT-B-16", vision_cfg=TINY_CLIP, **kwargs)


def capture_input(module: nn.Module) -> list[tuple[int, ...]]:
    """Shapes of the tensors ``module`` is called with (a forward pre-hook)."""
    shapes: list[tuple[int, ...]] = []
    module.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    return shapes


def save_state(state: dict[str, torch.Tensor], path) -> None:
    state = {k: v.contiguous().clone() for k, v in state.items()}
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, str(path))


def dinov2_release_layout(
    timm_state: dict[str, torch.Tensor], registers: bool, swiglu: bool
) -> dict[str, torch.Tensor]:
    """A timm DINOv2 state dict rewritten the way Meta's release files are laid out
    (``dinov2_vit*14*_pretrain.pth``): ``mask_token``, ``register_tokens``, class
    position inside ``pos_embed`` for register models, SwiGLU ``w12``/``w3``."""
    out = {}
    for key, value in timm_state.items():
        if swiglu:
            key = key.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3.")
        out[key] = value.clone()
    dim = out["cls_token"].shape[-1]
    out["mask_token"] = torch.randn(1, dim)
    if registers:
        cls_pos = torch.randn(1, 1, dim)
        out["register_tokens"] = out.pop("reg_token")
        out["pos_embed"] = torch.cat([cls_pos, out["pos_embed"]], dim=1)
        out["cls_token"] = out["cls_token"] - cls_pos
    return out


# -- shapes and the grid rule ------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(
    batch=st.integers(1, 2),
    height=st.integers(14, 70),
    width=st.integers(14, 70),
    grid=st.one_of(st.none(), st.tuples(st.integers(1, 7), st.integers(1, 7))),
)
def test_dinov2_map_shapes(batch: int, height: int, width: int, grid) -> None:
    backbone = shared_dinov2()
    maps = backbone(torch.rand(batch, 3, height, width), [0, 2], grid=grid)
    expected = grid or (math.ceil(height / 14), math.ceil(width / 14))
    assert list(maps) == [0, 2]
    for fmap in maps.values():
        assert fmap.shape == (batch, 32, *expected)
        assert torch.isfinite(fmap).all()


@settings(max_examples=8, deadline=None)
@given(
    height=st.integers(8, 100),
    width=st.integers(8, 100),
    grid=st.one_of(st.none(), st.tuples(st.integers(1, 6), st.integers(1, 6))),
)
def test_clip_map_shapes(height: int, width: int, grid) -> None:
    backbone = shared_clip()
    maps = backbone(torch.rand(1, 3, height, width), [1], grid=grid)
    expected = grid or (math.ceil(height / 16), math.ceil(width / 16))
    assert maps[1].shape == (1, 32, *expected)


@functools.cache
def shared_clip() -> CLIPBackbone:
    torch.manual_seed(0)
    return tiny_clip()


def test_grid_resizes_input_so_tokens_match() -> None:
    """The DINO-IR rule: a 128 crop with grid (16, 16) runs at 224 x 224 for patch 14."""
    backbone = tiny_dinov2()
    shapes = capture_input(backbone.model.patch_embed)
    maps = backbone(torch.rand(2, 3, 128, 128), [1], grid=(16, 16))
    assert shapes == [(2, 3, 224, 224)]
    assert maps[1].shape == (2, 32, 16, 16)


def test_native_resolution_pads_normalised_input() -> None:
    """grid=None: ImageNet normalisation, then zero padding to a multiple of 14.

    Compared with timm's own forward, so built with timm's position-embedding resize
    (the default, Meta's, is checked against Meta's arithmetic in test_pos_embed.py)."""
    torch.manual_seed(0)
    backbone = tiny_dinov2(pos_embed_resize="timm")
    x = torch.rand(1, 3, 50, 37)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    padded = torch.nn.functional.pad((x - mean) / std, (0, 42 - 37, 0, 56 - 50))
    expected = backbone.model.forward_intermediates(padded, indices=[1], intermediates_only=True)[0]
    torch.testing.assert_close(backbone(x, [1])[1], expected)


def test_runs_only_blocks_up_to_the_deepest_layer() -> None:
    backbone = shared_dinov2()
    calls = [capture_input(block) for block in backbone.model.blocks]
    backbone(torch.rand(1, 3, 28, 28), [0, 1])
    assert [len(c) for c in calls] == [1, 1, 0]
    clip = tiny_clip()
    clip_calls = [capture_input(block) for block in clip.tower.transformer.resblocks]
    clip(torch.rand(1, 3, 32, 32), [0])
    assert [len(c) for c in clip_calls] == [1, 0]


def test_layers_keep_order_and_accept_negative_indices() -> None:
    backbone = shared_dinov2()
    x = torch.rand(1, 3, 28, 42)
    maps = backbone(x, [2, 0, -1])
    assert list(maps) == [2, 0, -1]
    torch.testing.assert_close(maps[-1], maps[2])
    assert not torch.allclose(maps[0], maps[2])


@pytest.mark.parametrize("layers", [[3], [-4], [0, 7], [], ["1"]])
def test_bad_layers_are_clear_errors(layers) -> None:
    with pytest.raises(BuildError, match="layer|no layers"):
        shared_dinov2()(torch.rand(1, 3, 28, 28), layers)


def test_dinov3_through_the_timm_backbone() -> None:
    """DINOv3 (EVA code, RoPE, patch 16, 1 class + 4 storage tokens) on the same interface."""
    backbone = TimmBackbone("vit_small_patch16_dinov3", model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2})
    assert backbone.patch_size == 16 and backbone.num_layers == 2 and backbone.fixed_input_size is None
    maps = backbone(torch.rand(1, 3, 33, 65), [0, 1])
    assert maps[1].shape == (1, 32, 3, 5)
    assert backbone(torch.rand(1, 3, 40, 40), [1], grid=(6, 4))[1].shape == (1, 32, 6, 4)


def test_fixed_size_timm_model_resizes_output_to_the_grid() -> None:
    backbone = TimmBackbone(
        "vit_small_patch16_224",
        model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 64, "dynamic_img_size": False},
    )
    assert backbone.fixed_input_size == (64, 64)
    shapes = capture_input(backbone.model.patch_embed)
    maps = backbone(torch.rand(1, 3, 50, 70), [1], grid=(3, 9))
    assert shapes == [(1, 3, 64, 64)] and maps[1].shape == (1, 32, 3, 9)
    assert backbone(torch.rand(1, 3, 50, 70), [1])[1].shape == (1, 32, 4, 5)


def test_clip_runs_at_its_fixed_size_with_openai_normalisation() -> None:
    backbone = shared_clip()
    shapes = capture_input(backbone.tower.conv1)
    backbone(torch.rand(2, 3, 100, 30), [0], grid=(7, 2))
    assert shapes == [(2, 3, 64, 64)]
    assert torch.allclose(backbone.mean.flatten(), torch.tensor([0.48145466, 0.4578275, 0.40821073]))


def test_full_size_architectures_on_meta_device() -> None:
    with torch.device("meta"):
        base = DINOv2Backbone(size="b")
        giant = DINOv2Backbone(size="g", registers=True)
        clip = CLIPBackbone("ViT-B-16")
    assert (base.embed_dim, base.num_layers, base.patch_size) == (768, 12, 14)
    assert (giant.embed_dim, giant.num_layers, giant.model.num_prefix_tokens) == (1536, 40, 5)
    assert (clip.embed_dim, clip.num_layers, clip.patch_size, clip.fixed_input_size) == (768, 12, 16, (224, 224))


def test_dinov2_names_and_bad_size() -> None:
    assert dinov2_model_name("b") == "vit_base_patch14_dinov2"
    assert dinov2_model_name("large", registers=True) == "vit_large_patch14_reg4_dinov2"
    with pytest.raises(BuildError, match="size 'xl'"):
        dinov2_model_name("xl")


def test_built_through_the_registry() -> None:
    dino = restorekit.build("backbone", {"type": "dinov2", "size": "s", "img_size": 56, "model_kwargs": TINY})
    timm_bb = restorekit.build(
        "backbone",
        {"type": "timm", "model_name": "vit_small_patch14_reg4_dinov2", "img_size": 56, "model_kwargs": TINY},
    )
    clip = restorekit.build("backbone", {"type": "clip", "vision_cfg": TINY_CLIP})
    assert isinstance(dino, DINOv2Backbone) and isinstance(timm_bb, TimmBackbone) and isinstance(clip, CLIPBackbone)
    assert timm_bb(torch.rand(1, 3, 28, 28), [0])[0].shape == (1, 32, 2, 2)  # register tokens dropped


# -- frozen ----------------------------------------------------------------------------------
class Owner(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(32, 3, 1)


@pytest.mark.parametrize("make", [tiny_dinov2, tiny_clip], ids=["dinov2", "clip"])
def test_frozen_stays_frozen_and_passes_gradients_to_the_input(make) -> None:
    owner = Owner(make())
    owner.train()
    assert not owner.backbone.training and not any(m.training for m in owner.backbone.modules())
    assert all(not p.requires_grad for p in owner.backbone.parameters())
    x = torch.rand(1, 3, 32, 48, requires_grad=True)
    owner.head(owner.backbone(x, [1])[1]).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in owner.backbone.parameters())
    assert frozen_prefixes(owner) == ["backbone."]
    assert set(trainable_state_dict(owner)) == {"head.weight", "head.bias"}
    assert {id(p) for p in iter_trainable(owner)} == {id(p) for p in owner.head.parameters()}
    assert frozen_records(owner)["backbone"]["sha256"] is None


def test_unfrozen_backbone_trains() -> None:
    backbone = tiny_dinov2(frozen=False)
    backbone.train()
    assert backbone.training and all(p.requires_grad for p in backbone.parameters())
    backbone(torch.rand(1, 3, 28, 28), [2])[2].sum().backward()
    assert backbone.model.blocks[2].attn.qkv.weight.grad is not None


def test_autocast_knob(device: str) -> None:
    torch.manual_seed(0)
    plain = tiny_dinov2().to(device)
    bf16 = tiny_dinov2(dtype="bf16").to(device)
    bf16.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 42, 42, device=device)
    ref, out = plain(x, [2])[2], bf16(x, [2])[2]
    assert out.dtype == torch.float32
    if device == "cpu":  # the knob is for CUDA only: the CPU runs in full precision
        torch.testing.assert_close(out, ref)
    else:
        torch.testing.assert_close(out, ref, atol=0.1, rtol=0.05)
    with pytest.raises(BuildError, match="dtype"):
        resolve_dtype("int8")


@pytest.mark.parametrize("amp_device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_unset_dtype_inherits_the_callers_autocast(amp_device: str) -> None:
    """The engine's bf16 autocast must reach the backbone's blocks when its dtype is unset."""
    if amp_device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    backbone = tiny_dinov2().to(amp_device)
    seen = []
    backbone.model.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast(amp_device, dtype=torch.bfloat16):
        out = backbone(torch.rand(1, 3, 28, 28, device=amp_device), [1])[1]
    assert seen == [torch.bfloat16] and out.dtype == torch.float32


# -- weights -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size,registers",
    [("s", False), ("s", True), ("g", False), ("g", True)],
    ids=["vits", "vits-reg4", "vitg-swiglu", "vitg-swiglu-reg4"],
)
def test_timm_and_release_files_load_to_identical_features(tmp_path, size: str, registers: bool) -> None:
    torch.manual_seed(1)
    source = tiny_dinov2(size=size, registers=registers)
    state = source.model.state_dict()
    timm_file, release_file = tmp_path / "tiny.safetensors", tmp_path / "dinov2_tiny_pretrain.pth"
    save_state(state, timm_file)
    save_state(dinov2_release_layout(state, registers, swiglu=size == "g"), release_file)
    x = torch.rand(2, 3, 45, 60)
    reference = source(x, [0, 2])
    for path in (timm_file, release_file):
        loaded = tiny_dinov2(size=size, registers=registers, weights=str(path))
        for layer, fmap in loaded(x, [0, 2]).items():
            torch.testing.assert_close(fmap, reference[layer], rtol=0, atol=0)
        record = loaded.weights_record()
        assert record["weights"] == str(path)
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_release_file_resamples_position_embeddings(tmp_path) -> None:
    """A release file trained at another resolution (518 -> 37x37) fits after timm resamples."""
    torch.manual_seed(2)
    source = DINOv2Backbone(size="s", img_size=98, model_kwargs=TINY)  # 7x7 grid
    path = tmp_path / "release.pth"
    save_state(dinov2_release_layout(source.model.state_dict(), False, False), path)
    loaded = tiny_dinov2(weights=str(path))  # 4x4 grid
    assert loaded.model.pos_embed.shape == (1, 17, 32)
    torch.testing.assert_close(loaded.model.blocks[0].attn.qkv.weight, source.model.blocks[0].attn.qkv.weight)


def test_mismatching_file_names_file_architecture_and_keys(tmp_path) -> None:
    path = tmp_path / "wide.pth"
    save_state(DINOv2Backbone(size="s", img_size=56, model_kwargs={**TINY, "embed_dim": 64}).model.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        tiny_dinov2(weights=str(path))
    message = str(err.value)
    assert str(path) in message and "vit_small_patch14_dinov2" in message
    assert "shape mismatch" in message and "cls_token" in message


def test_file_from_another_depth_lists_missing_blocks(tmp_path) -> None:
    path = tmp_path / "shallow.safetensors"
    save_state(DINOv2Backbone(size="s", img_size=56, model_kwargs={**TINY, "depth": 2}).model.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"missing key.*blocks\.2\."):
        tiny_dinov2(weights=str(path))


def test_unreadable_and_absent_files(tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        tiny_dinov2(weights=str(junk))
    with pytest.raises(CheckpointError, match="does not exist"):
        tiny_dinov2(weights=str(tmp_path / "absent.safetensors"))
    with pytest.raises(CheckpointError, match="absent.pth"):
        tiny_clip(weights=str(tmp_path / "absent.pth"))


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.mark.parametrize(
    "make,weights",
    [(tiny_dinov2, True), (tiny_dinov2, "lvd142m"), (tiny_clip, "openai"), (tiny_clip, True)],
    ids=["dinov2-true", "dinov2-tag", "clip-openai", "clip-true"],
)
def test_hub_weights_offline_fail_fast_with_how_to(empty_hub_cache, make, weights) -> None:
    start = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        make(weights=weights)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message and "local" in message and "weights:" in message


def test_hub_tag_loads_from_the_local_cache_offline(empty_hub_cache) -> None:
    """Weights downloaded once (here: placed in the hub cache) load offline by tag."""
    torch.manual_seed(3)
    source = tiny_dinov2()
    snapshot = empty_hub_cache / "models--timm--vit_small_patch14_dinov2.lvd142m" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abc")
    save_state(source.model.state_dict(), snapshot / "model.safetensors")
    loaded = tiny_dinov2(weights=True)
    x = torch.rand(1, 3, 28, 28)
    torch.testing.assert_close(loaded(x, [2])[2], source(x, [2])[2], rtol=0, atol=0)
    assert loaded.weights_record()["weights"] == "vit_small_patch14_dinov2.lvd142m"
    assert (
        loaded.weights_record()["sha256"] == hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    )


def test_unknown_tags_list_the_known_ones() -> None:
    with pytest.raises(CheckpointError, match="lvd142m"):
        tiny_dinov2(weights="lvd999m")
    with pytest.raises(CheckpointError, match="openai"):
        tiny_clip(weights="no_such_tag")


def test_open_clip_checkpoint_round_trip(tmp_path) -> None:
    """A full open_clip CLIP state dict (visual.* and text keys) and a tower-only
    safetensors file both load, and the maps equal open_clip's own intermediates."""
    import open_clip

    torch.manual_seed(4)
    text_cfg = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
    clip_model = open_clip.model.CLIP(embed_dim=512, vision_cfg=TINY_CLIP, text_cfg=text_cfg).eval()
    full, tower_only = tmp_path / "open_clip_tiny.pt", tmp_path / "visual.safetensors"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in clip_model.state_dict().items()}}, full)
    save_state(clip_model.visual.state_dict(), tower_only)
    x = torch.rand(2, 3, 64, 64)
    normalised = (x - torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        open_clip.OPENAI_DATASET_STD
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = clip_model.visual.forward_intermediates(normalised, indices=[0, 1], intermediates_only=True)
    for path in (full, tower_only):
        backbone = tiny_clip(weights=str(path))
        maps = backbone(x, [0, 1])
        for i, layer in enumerate([0, 1]):
            torch.testing.assert_close(maps[layer], expected["image_intermediates"][i])
        assert backbone.weights_record()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_open_clip_mismatch_names_file_and_tower(tmp_path) -> None:
    path = tmp_path / "other.safetensors"
    save_state(CLIPBackbone("ViT-B-16", vision_cfg={**TINY_CLIP, "layers": 3}).tower.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        tiny_clip(weights=str(path))
    assert str(path) in str(err.value) and "ViT-B-16" in str(err.value)
    assert "transformer.resblocks.2." in str(err.value)


def test_open_clip_unknown_and_unsupported_models() -> None:
    with pytest.raises(BuildError, match="did you mean"):
        CLIPBackbone("ViT-B-61")
    with pytest.raises(BuildError, match="ResNet"):
        CLIPBackbone("RN50")
