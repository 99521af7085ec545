"""The loop on a GPU: bf16 autocast, channels_last, torch.compile, resume (skipped without CUDA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import engine_fakes
import pytest
import torch

from restorekit.engine import checkpoint as ckpt
from restorekit.engine.train import Trainer, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

TINY_RESTORMER = {
    "type": "restormer",
    "dim": 16,
    "num_blocks": [1, 1, 1, 1],
    "heads": [1, 2, 4, 8],
    "num_refinement_blocks": 1,
}


def recipe(out: Path, **train_keys: Any) -> dict:
    keys = {
        "iterations": 30,
        "batch_size": 8,
        "ckpt_every": 10,
        "log_every": 1,
        "lr": 1e-3,
        "out_dir": str(out),
        "progress": False,
        "device": "cuda",
    }
    keys.update(train_keys)
    return {"name": "cuda-test", "model": dict(TINY_RESTORMER), "loss": {"type": "l1"}, "train": keys}


def stream(batch: int = 8) -> engine_fakes.FakeStream:
    return engine_fakes.FakeStream(batch, patch=64)


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "event" not in r]


@pytest.mark.parametrize("compile_model", [False, True])
def test_bf16_training_on_cuda_learns(tmp_path: Path, compile_model: bool) -> None:
    result = train(recipe(tmp_path / "run", compile=compile_model, channels_last=True), stream=stream())
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["amp"] == "bf16" and info["device"].startswith("cuda")
    values = losses(result.run_dir)
    assert sum(values[-5:]) < sum(values[:5])
    weights = ckpt.load_checkpoint(ckpt.list_checkpoints(result.run_dir)[-1][1])
    assert all(t.dtype == torch.float32 for t in weights.model.values())  # fp32 master weights


@pytest.mark.parametrize("amp", ["off", "fp16"])  # fp16: the loss scale is saved and restored too
def test_resume_on_cuda_matches(tmp_path: Path, amp: str) -> None:
    full = train(recipe(tmp_path / "full", deterministic=True, amp=amp), stream=stream())

    trainer = Trainer(recipe(tmp_path / "cut", deterministic=True, amp=amp), stream=stream())
    engine_fakes.run_until(trainer, 17)
    resumed = train(recipe(tmp_path / "cut", deterministic=True, amp=amp), stream=stream(), resume="auto")
    a = ckpt.load_checkpoint(ckpt.list_checkpoints(full.run_dir)[-1][1])
    b = ckpt.load_checkpoint(ckpt.list_checkpoints(resumed.run_dir)[-1][1])
    assert a.state["loss_scaler"] == b.state["loss_scaler"] and bool(a.state["loss_scaler"]) == (amp == "fp16")
    assert a.model.keys() == b.model.keys() and a.ema is not None and b.ema is not None
    assert a.ema.keys() == b.ema.keys() == a.model.keys()
    for key in a.model:
        torch.testing.assert_close(b.model[key], a.model[key], rtol=0, atol=0)
        torch.testing.assert_close(b.ema[key], a.ema[key], rtol=0, atol=0)


def test_tiled_bf16_inference_on_cuda_close_to_fp32() -> None:
    from restorekit import build_model
    from restorekit.engine.infer import restore_tensor

    torch.manual_seed(0)
    model = build_model(TINY_RESTORMER).cuda().eval()
    image = torch.rand(1, 3, 300, 420, device="cuda")
    fp32 = restore_tensor(model, image, amp=False)
    bf16 = restore_tensor(model, image, tile=128, overlap=32, amp=True)
    assert bf16.dtype == torch.float32 and bf16.shape == image.shape
    assert (bf16 - fp32).abs().mean() < 0.01


def test_cuda_generator_states_of_more_gpus_than_this_host_has_restore_its_own() -> None:
    """A run saved on a host with more GPUs (one state each) resumes on this one."""
    from restorekit.engine.train import rng_state, set_rng_state

    saved = rng_state()
    extra = torch.cuda.device_count() + 3
    saved["cuda"] = [saved["cuda"][0].clone() for _ in range(extra)]
    expected = torch.rand(4, device="cuda")
    set_rng_state(saved)
    torch.testing.assert_close(torch.rand(4, device="cuda"), expected)


# -- training at scale: fp16 with loss scaling, one host read per step ---------------------------
def dino_ir_with_dpc() -> tuple[dict, dict]:
    """A tiny DINO-IR and L1 + DPC: the loss runs the backbone on the output, with gradients."""
    from restorekit.tiny import tiny_loss_spec, tiny_model_spec

    loss = {
        "type": "weighted_sum",
        "terms": [{"type": "l1", "weight": 1.0}, {"type": "dpc", "weight": 0.1, "layers": [0, 1]}],
    }
    return tiny_model_spec({"type": "dino_ir", "layers": [0, 1]}, loss), tiny_loss_spec(loss)


@pytest.mark.filterwarnings("ignore:.*randomly initialised")
def test_fp16_with_loss_scaling_trains_dino_ir_and_its_dpc_backbone_pass(tmp_path: Path) -> None:
    model, loss = dino_ir_with_dpc()
    rec = recipe(tmp_path / "run", amp="fp16", iterations=40)
    rec["model"], rec["loss"] = model, loss
    result = train(rec, stream=stream())
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["amp"] == "fp16"
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in lines if "event" not in r]
    assert all(r["loss"] == r["loss"] for r in logged[-10:])  # finite once the scale has settled
    assert {"l1", "dpc"} <= set(logged[-1]["terms"])  # DPC's backbone pass ran under fp16 autocast too
    assert sum(r["loss"] for r in logged[-5:]) < sum(r["loss"] for r in logged[:5])
    assert not [r for r in lines if r.get("event") == "nonfinite_skip"]  # overflows are scaler skips
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(result.run_dir)[-1][1]).state
    assert 1.0 <= state["loss_scaler"]["scale"] <= 2.0**16


def test_a_training_step_reads_the_device_once(tmp_path: Path) -> None:
    """The NaN guard's flags are the step's only host read; steps between log lines add none."""
    import warnings

    trainer = Trainer(
        recipe(tmp_path / "run", iterations=6, log_every=100, ckpt_every=100, ema_decay=0.99), stream=stream()
    )
    counts: list[tuple[int, int]] = []
    original = trainer.train_step

    def spy(batch: Any, step: int) -> Any:
        before = len(caught)
        out = original(batch, step)
        counts.append((before, len(caught)))
        return out

    trainer.train_step = spy  # type: ignore[method-assign]
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.run()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [after - before for before, after in counts]
    assert syncs[1:] == [1] * 5, [str(w.message) for w in caught][:5]  # after the first step's set-up
    between = [counts[i + 1][0] - counts[i][1] for i in range(4)]  # loop code between two non-log steps
    assert between == [0, 0, 0, 0]
