"""The training state a checkpoint holds, written and read back whole (resume is bit for bit).

Beyond the weights (``model.safetensors``, ``ema.safetensors``) a checkpoint's
``state.pt`` holds the optimizer, the schedule's state, the EMA update count, the
fp16 loss scale, the NaN guard's counters, the best record and every rank's
generator states (python, numpy, torch CPU and CUDA). Checkpoints written before the
schedule's key was renamed hold it as ``"scheduler"``; both are read.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from restorekit.engine import checkpoint as ckpt
from restorekit.engine import distributed as dist_utils
from restorekit.engine.distributed import DistContext
from restorekit.engine.step import TrainStep
from restorekit.errors import CheckpointError
from restorekit.frozen import frozen_records, trainable_state_dict
from restorekit.io.state_dict import copy_into

logger = logging.getLogger(__name__)

SCHEDULE_KEY = "schedule"
OLD_SCHEDULE_KEY = "scheduler"  # checkpoints written before the rename


# -- randomness -----------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and CUDA generator states, as weights_only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        # One state per GPU the saving process saw; a host with fewer GPUs restores those it has.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


# -- the best record ------------------------------------------------------------------
@dataclass(frozen=True)
class BestRecord:
    """The validation that scored best so far: its step, the monitored metric and its score."""

    step: int
    score: float
    metric: str

    @classmethod
    def from_state(cls, value: Mapping[str, Any] | None) -> BestRecord | None:
        """The record a checkpoint holds (None: nothing validated yet, or a record without its metric)."""
        if not value or "metric" not in value:
            return None  # a record that does not say its metric cannot be compared with any
        return cls(int(value["step"]), float(value["score"]), str(value["metric"]))


def improved(best: BestRecord | None, metric: str, score: float | None, higher_is_better: bool) -> bool:
    """Whether ``score`` of ``metric`` beats ``best`` (a record of another metric is beaten by any finite score)."""
    if score is None or not math.isfinite(score):
        return False
    if best is None or best.metric != metric:
        return True
    return score > best.score if higher_is_better else score < best.score


def saved_schedule(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The schedule's saved state under its key, or the key of checkpoints written before the rename."""
    value = state.get(SCHEDULE_KEY, state.get(OLD_SCHEDULE_KEY))
    return dict(value) if value is not None else None


# -- the state ---------------------------------------------------------------------------
class TrainingState:
    """What a checkpoint holds besides the weights' folder layout: read, written, counted.

    ``nonfinite_streak`` / ``nonfinite_total``: the NaN guard's skipped steps in a row
    and in all; ``best``: the best validation so far.
    """

    def __init__(self, step: TrainStep, ctx: DistContext, *, keep_last: int, keep_best: bool) -> None:
        self.train_step = step
        self.ctx = ctx
        self.keep_last, self.keep_best = keep_last, keep_best
        self.nonfinite_streak = 0
        self.nonfinite_total = 0
        self.best: BestRecord | None = None

    @property
    def model(self) -> nn.Module:
        return self.train_step.model

    # -- writing ------------------------------------------------------------------------
    def save(self, step: int, run_dir: Path, metrics: Mapping[str, Any] | None, is_best: bool) -> Path:
        """Write the checkpoint of ``step`` (rank 0 writes, every rank gives its generator states)."""
        rng = dist_utils.gather_objects(self.ctx, rng_state())
        # Rank 0 writes; the others wait for it, and all stop together when the disk refuses.
        dist_utils.on_main(self.ctx, self._write, step, run_dir, metrics, is_best, rng)
        return run_dir / ckpt.CKPT_DIR / ckpt.ckpt_name(step)

    def state_dict(self, step: int, rng: list[Any]) -> dict[str, Any]:
        """``state.pt``: plain tensors and containers (read with ``weights_only=True``)."""
        parts = self.train_step
        return {
            "step": step,
            "data_position": step,
            "optimizer": parts.optimizer.state_dict(),
            SCHEDULE_KEY: {**parts.schedule.state_dict(), "lr": parts.schedule(max(step - 1, 0))},
            "ema_updates": parts.ema.updates if parts.ema is not None else 0,
            "loss_scaler": parts.scaling.state_dict(),
            "nonfinite_streak": self.nonfinite_streak,
            "nonfinite_total": self.nonfinite_total,
            "best": asdict(self.best) if self.best is not None else None,
            "rng": rng,
            "world_size": self.ctx.world_size,
        }

    def _write(self, step: int, run_dir: Path, metrics: Mapping[str, Any] | None, is_best: bool, rng: list) -> None:
        # nonfinite_streak > 0 marks a checkpoint written while steps are being skipped.
        meta = {
            "metrics": dict(metrics or {}),
            "frozen": frozen_records(self.model),
            "world_size": self.ctx.world_size,
            "nonfinite_streak": self.nonfinite_streak,
        }
        ema = self.train_step.ema
        ckpt.save_checkpoint(
            run_dir,
            step,
            trainable_state_dict(self.model),
            ema.state_dict() if ema is not None else None,
            self.state_dict(step, rng),
            meta,
        )
        if is_best and self.best is not None:
            self.record_best(run_dir)
        ckpt.prune(run_dir, self.keep_last, self.keep_best)

    def record_best(self, run_dir: Path) -> None:
        """``best.json``: which checkpoint scored best (it survives pruning)."""
        if self.best is not None:
            ckpt.write_best(run_dir, self.best.step, self.best.score, self.best.metric)

    # -- reading ------------------------------------------------------------------------
    def load(self, path: Path) -> int:
        """Restore everything from the checkpoint at ``path``; returns the step to continue from."""
        loaded = ckpt.load_checkpoint(path)
        copy_into(trainable_state_dict(self.model), loaded.model, f"checkpoint {path}", "the recipe's model")
        state = loaded.state
        ema, optimizer = self.train_step.ema, self.train_step.optimizer
        if ema is not None and loaded.ema is not None:
            ema.load_state_dict(loaded.ema, updates=int(state.get("ema_updates", 0)))
        elif ema is not None:
            if self.ctx.is_main:
                logger.warning(
                    "checkpoint %s holds no EMA (the run trained without one so far); the EMA starts from its weights",
                    path,
                )
            ema.load_state_dict(loaded.model, updates=0)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"checkpoint {path}: its optimizer state does not fit the recipe's "
                f"optimizer ({type(exc).__name__}: {exc})"
            ) from exc
        self.train_step.scaling.load_state_dict(state.get("loss_scaler"))
        self._check_schedule(path, saved_schedule(state), loaded.step)
        self.nonfinite_streak = int(state.get("nonfinite_streak", 0))
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.best = BestRecord.from_state(state.get("best"))
        rng = state.get("rng") or []
        if rng:
            same_world = len(rng) == self.ctx.world_size
            set_rng_state(rng[self.ctx.rank] if same_world else rng[0])
        if int(state.get("data_position", loaded.step)) != loaded.step:
            raise CheckpointError(f"checkpoint {path}: data position and step disagree")
        return loaded.step

    def _check_schedule(self, path: Path, saved: Mapping[str, Any] | None, step: int) -> None:
        """Say so when the recipe's schedule gives another rate at the checkpoint's step than it recorded."""
        if saved is None or "lr" not in saved or not self.ctx.is_main:
            return
        now = self.train_step.schedule(max(step - 1, 0))
        if not math.isclose(float(saved["lr"]), now, rel_tol=1e-9, abs_tol=0.0):
            logger.warning(
                "checkpoint %s: the learning rate at step %d was %.6g; the recipe's schedule gives %.6g",
                path,
                step,
                float(saved["lr"]),
                now,
            )
