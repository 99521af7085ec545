"""Loading body weights: saved files, the official release layouts, and files that do not fit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from restorekit import build
from restorekit.bodies.promptir import UNUSED_OFFICIAL_MODULES, PromptIR
from restorekit.bodies.restormer import Restormer
from restorekit.errors import CheckpointError

TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 2, 2], num_refinement_blocks=1)
TINY_PROMPTS = dict(prompt_dims=[4, 8, 8], prompt_sizes=[8, 4, 4], prompt_len=3)


def make(name: str, seed: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    extra = TINY_PROMPTS if name == "promptir" else {}
    return {"restormer": Restormer, "promptir": PromptIR}[name](**TINY, **extra, **kwargs).eval()


def outputs(body: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(123)
    x = torch.rand(2, 3, 13, 18)
    with torch.no_grad():
        return body(x)


@pytest.mark.parametrize("name", ["restormer", "promptir"])
def test_save_load_round_trip(tmp_path: Path, name):
    source = make(name, seed=0)
    path = tmp_path / "body.pth"
    torch.save(source.state_dict(), path)
    fresh = make(name, seed=1)
    assert not torch.equal(outputs(fresh), outputs(source))
    loaded = build(
        "body", {"type": name, **TINY, **(TINY_PROMPTS if name == "promptir" else {}), "weights": str(path)}
    ).eval()
    assert torch.equal(outputs(loaded), outputs(source))


@pytest.mark.parametrize("name", ["restormer", "promptir"])
def test_safetensors_round_trip(tmp_path: Path, name):
    source = make(name, seed=0)
    path = tmp_path / "body.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = make(name, seed=1)
    report = target.load_weights(path)
    assert report.source_key is None and report.loaded == len(source.state_dict())
    assert torch.equal(outputs(target), outputs(source))


@pytest.mark.parametrize("wrapper", ["params", "params_ema"])
def test_restormer_release_layout_loads(tmp_path: Path, wrapper):
    """Restormer's released .pth files hold the weights under 'params' (BasicSR)."""
    source = make("restormer", seed=0)
    path = tmp_path / "motion_deblurring.pth"
    torch.save({wrapper: source.state_dict()}, path)
    target = make("restormer", seed=1)
    report = target.load_weights(path)
    assert report.source_key == wrapper and report.ignored == []
    assert torch.equal(outputs(target), outputs(source))


def test_params_win_over_params_ema_unless_asked(tmp_path: Path):
    a, b = make("restormer", seed=0), make("restormer", seed=1)
    path = tmp_path / "both.pth"
    torch.save({"params": a.state_dict(), "params_ema": b.state_dict()}, path)
    target = make("restormer", seed=2)
    target.load_weights(path)
    assert torch.equal(outputs(target), outputs(a))
    target.load_weights(path, key="params_ema")
    assert torch.equal(outputs(target), outputs(b))
    with pytest.raises(CheckpointError, match="no key 'ema'.*params, params_ema"):
        target.load_weights(path, key="ema")


def _official_unused_tensors() -> dict[str, torch.Tensor]:
    """The six modules the official PromptIR builds but never uses (official shapes)."""
    shapes = {
        "chnl_reduce1": (64, 64), "chnl_reduce2": (128, 128), "chnl_reduce3": (256, 320),
        "reduce_noise_channel_1": (48, 112), "reduce_noise_channel_2": (96, 224),
        "reduce_noise_channel_3": (192, 448),
    }  # fmt: skip
    return {f"{name}.weight": torch.randn(o, i, 1, 1) for name, (o, i) in shapes.items()}


def test_promptir_lightning_release_layout_loads_and_reports_unused_keys(tmp_path: Path, caplog):
    """PromptIR's release is a Lightning .ckpt: 'state_dict' with the 'net.' prefix."""
    source = make("promptir", seed=0)
    unused = _official_unused_tensors()
    assert sum(v.numel() for v in unused.values()) == 215_296
    state = {f"net.{k}": v for k, v in {**source.state_dict(), **unused}.items()}
    ckpt = {
        "epoch": 119,
        "global_step": 1000,
        "pytorch-lightning_version": "2.0.1",
        "state_dict": state,
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]}],
        "lr_schedulers": [{"base_lrs": [2e-4], "last_epoch": 119}],
    }
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    target = make("promptir", seed=1)
    with caplog.at_level(logging.WARNING, logger="restorekit.bodies.weights"):
        report = target.load_weights(path)
    assert report.source_key == "state_dict"
    assert report.ignored == sorted(unused)
    assert report.loaded == len(source.state_dict())
    assert torch.equal(outputs(target), outputs(source))
    logged = caplog.text
    assert str(path) in logged and all(k in logged for k in unused)
    assert set(UNUSED_OFFICIAL_MODULES) == {k.split(".")[0] for k in unused}


def test_lightning_keys_outside_net_are_dropped_and_reported(tmp_path: Path, caplog):
    source = make("promptir", seed=0)
    state = {f"net.{k}": v for k, v in source.state_dict().items()}
    state["ssim_loss_fn.kernel"] = torch.ones(3)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state}, path)
    target = make("promptir", seed=1)
    with caplog.at_level(logging.WARNING, logger="restorekit.bodies.weights"):
        report = target.load_weights(path)
    assert report.ignored == ["ssim_loss_fn.kernel"] and "ssim_loss_fn.kernel" in caplog.text
    assert torch.equal(outputs(target), outputs(source))


def test_ddp_prefix_is_stripped(tmp_path: Path):
    source = make("restormer", seed=0)
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    target = make("restormer", seed=1)
    target.load_weights(path)
    assert torch.equal(outputs(target), outputs(source))


def test_unused_keys_are_only_accepted_by_promptir(tmp_path: Path):
    source = make("restormer", seed=0)
    path = tmp_path / "extra.pth"
    torch.save({"params": {**source.state_dict(), **_official_unused_tensors()}}, path)
    with pytest.raises(CheckpointError, match="unexpected key.*chnl_reduce1.weight"):
        make("restormer", seed=1).load_weights(path)


# -- files that do not fit -------------------------------------------------------------------
def test_restormer_weights_in_promptir_name_file_architecture_and_keys(tmp_path: Path):
    path = tmp_path / "restormer_deraining.pth"
    torch.save({"params": make("restormer", seed=0).state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        make("promptir", seed=0).load_weights(path)
    message = str(info.value)
    assert str(path) in message and "promptir (dim=8" in message
    assert "missing key(s) (first: " in message and "prompt" in message
    assert "shape mismatch" in message and "up4_3.body.0.weight" in message


def test_other_width_reports_shapes(tmp_path: Path):
    path = tmp_path / "wide.pth"
    torch.save(make("restormer", seed=0, ffn_expansion_factor=3.0).state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=r"wide\.pth.*restormer.*ffn\.project_in\.weight: file \(48, 8, 1, 1\) vs model \(42, 8, 1, 1\)",
    ):
        make("restormer", seed=0).load_weights(path)


def test_bias_free_file_suggests_the_knob(tmp_path: Path):
    path = tmp_path / "gaussian_color_denoising_blind.pth"
    torch.save({"params": make("restormer", seed=0, layernorm_type="BiasFree").state_dict()}, path)
    with pytest.raises(CheckpointError, match="layernorm_type='BiasFree'"):
        make("restormer", seed=0).load_weights(path)
    fitting = make("restormer", seed=1, layernorm_type="BiasFree")
    fitting.load_weights(path)  # and with the knob it loads


def test_unreadable_files_raise_checkpoint_errors(tmp_path: Path):
    body = make("restormer", seed=0)
    with pytest.raises(CheckpointError, match="does not exist"):
        body.load_weights(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        body.load_weights(garbage)
    not_tensors = tmp_path / "config.pth"
    torch.save({"lr": 1e-3, "name": "x"}, not_tensors)
    with pytest.raises(CheckpointError, match="config.pth.*not a state dict"):
        body.load_weights(not_tensors)


class _Payload:
    """A pickled object that weights_only loading must refuse."""


def test_pickled_objects_are_refused(tmp_path: Path):
    path = tmp_path / "unsafe.pth"
    torch.save({"params": make("restormer", seed=0).state_dict(), "obj": _Payload()}, path)
    with pytest.raises(CheckpointError, match="unsafe.pth.*weights_only=True"):
        make("restormer", seed=0).load_weights(path)


def test_failed_load_leaves_the_body_untouched(tmp_path: Path):
    body = make("restormer", seed=0)
    before = outputs(body)
    partial = dict(make("restormer", seed=1).state_dict())
    partial.pop("output.weight")
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(CheckpointError, match="1 missing key.*output.weight"):
        body.load_weights(path)
    assert torch.equal(outputs(body), before)
