"""Train the engine fakes in this process group, for tests/test_engine_torchrun.py.

``python tests/torchrun_driver.py OUT PHASE...`` in one process, or the same under
``torchrun --nproc_per_node N``. Phases:

* ``plain_full``: the plain conv net, 8 steps without interruption, into ``OUT/plain``;
* ``plain_resumed``: the same run stopped at step 6 (after the checkpoint of step 4)
  and resumed with ``--resume auto`` semantics, into ``OUT/plain``;
* ``noisy``: a net that draws the global generators, differently on each rank, once
  without interruption (``OUT/noisy_full``) and once stopped and resumed (``OUT/noisy_cut``).

Every run validates at steps 4 and 8 on two small test sets (3 and 1 images, so the
ranks' shares of a set differ).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import engine_fakes
import torch

from restorekit.engine.train import Trainer

ITERATIONS, STOP_AT = 8, 6


def recipe(out: Path, model: dict) -> dict:
    train = {
        "iterations": ITERATIONS,
        "batch_size": 4,
        "ckpt_every": 4,
        "val_every": 4,
        "log_every": 1,
        "schedule": {"warmup_iters": 2},
        "lr": 1e-3,
        "out_dir": str(out),
        "progress": False,
        "deterministic": True,
        "device": "cpu",
        "threads": 1,
    }
    return {
        "name": "torchrun-test",
        "model": model,
        "loss": {"type": "engine_test_nan"},
        "train": train,
        "eval": {"crop_multiple": 8, "grid": False},
    }


def trainer(out: Path, model: dict) -> Trainer:
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    rec = recipe(out, model)
    stream = engine_fakes.FakeStream(rec["train"]["batch_size"] // world, rank=rank, world_size=world)
    sets = {"noise": engine_fakes.FakeEvalSet(3, 24), "other": engine_fakes.FakeEvalSet(1, 20, seed=3)}
    return Trainer(rec, stream=stream, eval_sets=sets)


def interrupted_then_resumed(out: Path, model: dict) -> None:
    engine_fakes.run_until(trainer(out, model), STOP_AT)
    trainer(out, model).run(resume="auto")


def main(out: Path, phases: list[str]) -> None:
    engine_fakes.register()
    plain = {"type": "engine_test_convnet"}
    noisy = {"type": "engine_test_convnet", "noise": 0.05}
    for phase in phases:
        if phase == "plain_full":
            trainer(out / "plain", plain).run()
        elif phase == "plain_resumed":
            interrupted_then_resumed(out / "plain", plain)
        elif phase == "noisy":
            trainer(out / "noisy_full", noisy).run()
            interrupted_then_resumed(out / "noisy_cut", noisy)
        else:
            raise SystemExit(f"unknown phase {phase!r}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
