"""Train the engine fakes under torchrun as several nodes or an elastic group, for tests/test_engine_multinode.py.

``torchrun ... tests/multinode_driver.py OUT PHASE...``. Each process writes what it
saw to ``OUT/<phase>-rank<R>-attempt<A>.json`` (A: torchrun's restart count). Phases:

* ``resumed``: the plain conv net, stopped before step 6 and continued with
  ``--resume auto`` semantics, into ``OUT/resumed``; records each step's batch
  fingerprints and, at step 3, the run folder's lock record and OUT's folders;
* ``count``: the depthwise net for 4 steps, counting ``torch.distributed.all_reduce``
  calls per step and DDP's grad-stride warnings;
* ``signal``: the plain net; the last rank sends itself SIGTERM as step 3 begins;
  records where each rank stopped;
* ``request``: the plain net with a recipe callback that asks to stop at step 3 on the
  last rank only; counts all-reduces per step and records where each rank stopped;
* ``elastic``: the plain net as a plain ``train`` call (no resume flag); on the first
  attempt the last rank SIGKILLs itself after step 6, so torchrun restarts the group.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import engine_fakes
import torch.distributed as dist

from restorekit.console import configure
from restorekit.engine.train import Trainer
from restorekit.errors import TrainingInterrupted

ITERATIONS, CUT_AT, GLOBAL_BATCH = 10, 6, 4
RANK, WORLD = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
ATTEMPT = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def recipe(out: Path, model: str = "engine_test_convnet", **train: Any) -> dict:
    """The run every phase trains (and the test's one-process reference with it)."""
    settings = {
        "iterations": ITERATIONS,
        "batch_size": GLOBAL_BATCH,
        "ckpt_every": 5,
        "val_every": 0,
        "log_every": 1,
        "schedule": {"warmup_iters": 2},
        "lr": 1e-3,
        "ema_decay": 0.9,
        "out_dir": str(out),
        "progress": False,
        "deterministic": True,
        "device": "cpu",
        "threads": 1,
        **train,
    }
    return {"name": "multinode-test", "model": {"type": model}, "loss": {"type": "engine_test_nan"}, "train": settings}


def trainer(rec: dict) -> Trainer:
    return Trainer(rec, stream=engine_fakes.FakeStream(GLOBAL_BATCH // WORLD, rank=RANK, world_size=WORLD))


def fingerprint(batch: Any) -> list[float]:
    """Each sample's sum: which samples of the global batch this rank trained on."""
    return [round(float(x), 4) for x in batch["lq"].sum(dim=(1, 2, 3))]


def watch(t: Trainer, seen: dict[str, Any], hook: Any = None) -> None:
    """Wrap the trainer's step: record the batch of each step, call ``hook(index)`` first."""
    original = t.train_step

    def step(batch: Any, index: int) -> Any:
        if hook is not None:
            hook(index)
        seen.setdefault("batches", {})[str(index)] = fingerprint(batch)
        return original(batch, index)

    t.train_step = step  # type: ignore[method-assign]


def resumed(out: Path, seen: dict[str, Any]) -> None:
    rec = recipe(out / "resumed")

    def look(index: int) -> None:
        if index == 3:  # mid-run: who holds the lock, which folders exist
            seen["lock"] = json.loads((out / "resumed" / "train.lock").read_text())
            seen["folders"] = sorted(p.name for p in out.iterdir() if p.is_dir())

    first = trainer(rec)
    watch(first, seen, look)
    engine_fakes.run_until(first, CUT_AT)
    again = trainer(rec)
    watch(again, seen)
    seen["step"] = again.run(resume="auto").step


def count(out: Path, seen: dict[str, Any]) -> None:
    counted_run(trainer(recipe(out / "count", "engine_test_depthwise", iterations=4, ckpt_every=100)), seen)


def request(out: Path, seen: dict[str, Any]) -> None:
    callbacks = [{"type": "engine_test_stop_on_last_rank", "step": 3}]
    t = trainer(recipe(out / "request", iterations=6, ckpt_every=100, callbacks=callbacks))
    seen["step"] = counted_run(t, seen)


def counted_run(t: Trainer, seen: dict[str, Any]) -> int:
    """Run ``t`` counting ``torch.distributed.all_reduce`` calls between step starts; the step it ended at."""
    calls: list[int] = []
    original = dist.all_reduce

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    per_step: list[int] = []
    watch(t, seen, lambda index: per_step.append(len(calls)))
    dist.all_reduce = counted  # type: ignore[assignment]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step = t.run().step
    finally:
        dist.all_reduce = original
    marks = [*per_step, len(calls)]
    seen["all_reduces_per_step"] = [b - a for a, b in zip(marks, marks[1:])]
    seen["grad_stride_warnings"] = sum("Grad strides do not match" in str(w.message) for w in caught)
    return step


def stopped(out: Path, seen: dict[str, Any]) -> None:
    t = trainer(recipe(out / "signal", ckpt_every=100))

    def term(index: int) -> None:
        if index == 3 and RANK == WORLD - 1:
            os.kill(os.getpid(), signal.SIGTERM)  # one node's worker only

    watch(t, seen, term)
    try:
        t.run()
    except TrainingInterrupted as exc:
        seen["stopped"] = {"message": str(exc), "exit_code": exc.exit_code}


def elastic(out: Path, seen: dict[str, Any]) -> None:
    t = trainer(recipe(out / "elastic", ckpt_every=4))

    def die(index: int) -> None:
        if index == CUT_AT and ATTEMPT == 0 and RANK == WORLD - 1:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 of one worker, not of the agent

    watch(t, seen, die)
    seen["start"] = None
    seen["step"] = t.run().step
    seen["start"] = min(int(k) for k in seen["batches"])


PHASES = {"resumed": resumed, "count": count, "request": request, "signal": stopped, "elastic": elastic}


def main(out: Path, phases: list[str]) -> None:
    engine_fakes.register()
    configure(0)  # the CLI's console: global rank 0 shows its log, the others only errors
    for phase in phases:
        seen: dict[str, Any] = {
            "rank": RANK,
            "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
            "node": int(os.environ.get("GROUP_RANK", "0")),
            "pid": os.getpid(),
        }
        PHASES[phase](out, seen)
        (out / f"{phase}-rank{RANK}-attempt{ATTEMPT}.json").write_text(json.dumps(seen))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
