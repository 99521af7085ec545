"""The loop on a GPU: bf16 autocast, channels_last, torch.compile, resume (skipped without CUDA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import engine_fakes
from restorekit.engine import checkpoint as ckpt
from restorekit.engine.train import Trainer, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

TINY_RESTORMER = {"type": "restormer", "dim": 16, "num_blocks": [1, 1, 1, 1], "heads": [1, 2, 4, 8],
                  "num_refinement_blocks": 1}


def recipe(out: Path, **train_keys: Any) -> dict:
    keys = {"iterations": 30, "batch_size": 8, "ckpt_every": 10, "log_every": 1, "lr": 1e-3,
            "out_dir": str(out), "progress": False, "device": "cuda"}
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


def test_resume_on_cuda_matches(tmp_path: Path) -> None:
    full = train(recipe(tmp_path / "full", deterministic=True, amp="off"), stream=stream())

    trainer = Trainer(recipe(tmp_path / "cut", deterministic=True, amp="off"), stream=stream())
    engine_fakes.run_until(trainer, 17)
    resumed = train(recipe(tmp_path / "cut", deterministic=True, amp="off"), stream=stream(), resume="auto")
    a = ckpt.load_checkpoint(ckpt.list_checkpoints(full.run_dir)[-1][1])
    b = ckpt.load_checkpoint(ckpt.list_checkpoints(resumed.run_dir)[-1][1])
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
