"""Training is bit for bit what it was: a recorded trace of the tiny CPU recipe.

``tests/fixtures/train_trace.json`` holds, for ``demo/restormer_tiny`` shrunk to a few
seconds (seed 0, one thread, deterministic), every one of the first 50 steps' loss and
gradient norm as logged, and the sha256 of each tensor of the final checkpoint (the
model and its EMA). It was recorded with the engine before the Trainer was split by job
(issue 22), so any refactor of the loop, the step or the checkpoint must reproduce it
exactly. Float results can differ across CPU instruction sets; re-record on purpose
only (``python tests/test_engine_trace.py --record``) and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from restorekit.engine import checkpoint as ckpt
from restorekit.engine.train import train
from restorekit.recipes import load_recipe

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "train_trace.json"
STEPS = 50

OVERRIDES = {
    "model.dim": 8,
    "model.heads": [1, 1, 2, 2],
    "data.patch_size": 32,
    "train.batch_size": 2,
    "train.threads": 1,
    "train.deterministic": True,
    "train.progress": False,
    "train.log_every": 1,
    "train.iterations": STEPS,
    "train.ckpt_every": STEPS,
    "train.schedule.warmup_iters": 5,
    "eval.after_train": False,
    **{f"data.train.{task}.dataset.max_size": 96 for task in ("noise", "rain", "haze")},
}


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes (equal digests: equal bits)."""
    data = tensor.detach().cpu().contiguous()
    head = f"{data.dtype}{tuple(data.shape)}".encode()
    return hashlib.sha256(head + data.view(torch.uint8).numpy().tobytes()).hexdigest()


def record_trace(out: Path) -> dict[str, Any]:
    """Train the shrunk demo recipe into ``out``; its per-step numbers and final weights' digests."""
    recipe = load_recipe("demo/restormer_tiny", {**OVERRIDES, "train.out_dir": str(out)})
    threads = torch.get_num_threads()
    try:
        train(recipe, source="demo/restormer_tiny")
    finally:
        torch.set_num_threads(threads)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "event" not in r]
    step, path = ckpt.list_checkpoints(out)[-1]
    weights = {
        name: {key: tensor_digest(value) for key, value in sorted(load_file(str(path / file)).items())}
        for name, file in (("model", ckpt.MODEL_FILE), ("ema", ckpt.EMA_FILE))
    }
    return {
        "recipe": "demo/restormer_tiny",
        "overrides": OVERRIDES,
        "steps": [r["step"] for r in steps],
        "loss": [r["loss"] for r in steps],
        "grad_norm": [r["grad_norm"] for r in steps],
        "final_step": step,
        "weights": weights,
    }


def test_training_reproduces_the_recorded_trace_bit_for_bit(tmp_path: Path) -> None:
    expected = json.loads(FIXTURE.read_text())
    got = record_trace(tmp_path / "run")
    assert got["steps"] == list(range(1, STEPS + 1)) == expected["steps"]
    for i, (a, b) in enumerate(zip(got["loss"], expected["loss"])):
        assert a == b, f"step {i + 1}: loss {a!r} != recorded {b!r}"
    for i, (a, b) in enumerate(zip(got["grad_norm"], expected["grad_norm"])):
        assert a == b, f"step {i + 1}: gradient norm {a!r} != recorded {b!r}"
    assert got["final_step"] == expected["final_step"] == STEPS
    assert got["weights"] == expected["weights"]


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trace = record_trace(Path(tmp) / "run")
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in trace.items()]
    FIXTURE.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {FIXTURE}")
