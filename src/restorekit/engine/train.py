"""The training loop: iteration-based, resumable bit for bit, one process or torchrun DDP.

One step: the batch of step ``s`` (a pure function of seed, s, rank and world size),
forward (bf16 autocast on CUDA) and backward over ``train.accumulate`` micro-batches,
gradient clipping, a NaN guard, an AdamW step at the rate ``schedule(s)``, an EMA
update. The step's numbers stay on the device: the guard's flags are its one host
read, and the loss, gradient norm and terms are read at log steps only. Every
``val_every`` steps the EMA weights are scored per task; every ``ckpt_every`` steps
(and at the end, and when validation improves) rank 0 writes a checkpoint atomically.

NaN guard: when the loss or the gradient norm is not finite on any rank, the step
is skipped (no optimizer, EMA update; gradients dropped) but the step counter
advances: the batch is spent and the rate follows the counter, so a poisoned batch
is never retried. ``train.max_nonfinite`` skipped steps in a row abort the run.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from restorekit.engine import checkpoint as ckpt
from restorekit.engine import distributed as dist_utils
from restorekit.engine.accumulate import (
    LossTotals,
    StepResult,
    WindowMean,
    gradient_sync,
    micro_batch_size,
    micro_batches,
    read_numbers,
)
from restorekit.engine.config import EvalConfig, TrainConfig, eval_config, train_config
from restorekit.engine.distributed import DistContext
from restorekit.engine.ema import EMA
from restorekit.engine.infer import autocast_context
from restorekit.engine.loggers import LoggerSet, grid_images, open_loggers
from restorekit.engine.run_folder import (
    METRICS_FILE,
    RUN_STAMP_PATTERN,
    MetricsLog,
    default_run_dir,
    write_run_files,
)
from restorekit.engine.run_lock import RunLock
from restorekit.engine.scaler import LossScaling
from restorekit.engine.signals import StopSignals, TrainingInterrupted, signal_name
from restorekit.engine.step import forward_loss
from restorekit.errors import CheckpointError, RecipeError, RestorekitError
from restorekit.frozen import random_backbone_notes
from restorekit.recipes import dump_recipe

logger = logging.getLogger(__name__)


class TrainingDiverged(RestorekitError, RuntimeError):
    """Too many non-finite steps in a row."""


@dataclass
class TrainResult:
    """What a finished run leaves: its folder, its last step and scores."""

    run_dir: Path
    step: int
    skipped_steps: int = 0
    validation: dict[str, Any] | None = None
    final_eval: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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


def recipe_name(recipe: Mapping[str, Any], source: str) -> str:
    name = recipe.get("name") or Path(str(source)).stem or "run"
    return str(name).replace("/", "_")


# -- the trainer ----------------------------------------------------------------------
class Trainer:
    """Holds the parts of one run; :meth:`run` trains from a fresh start or a checkpoint."""

    def __init__(
        self,
        recipe: Mapping[str, Any],
        *,
        source: str = "recipe",
        stream: Any = None,
        eval_sets: Mapping[str, Any] | None = None,
    ) -> None:
        self.recipe = dict(recipe)
        self.source = source
        self.cfg: TrainConfig = train_config(recipe, source)
        self.eval_cfg: EvalConfig = eval_config(recipe, source)
        if self.cfg.best_metric not in self.eval_cfg.metric_names():
            raise RecipeError(
                f"{source}: train.best_metric {self.cfg.best_metric!r} is not among eval.metrics "
                f"({', '.join(self.eval_cfg.metric_names())})"
            )
        self.ctx: DistContext = dist_utils.init(self.cfg.device)
        self.per_rank_batch = dist_utils.per_rank_batch(self.cfg.batch_size, self.ctx.world_size)
        self.micro_batch = micro_batch_size(self.cfg.batch_size, self.ctx.world_size, self.cfg.accumulate)
        self._stream = stream
        self._eval_sets = eval_sets
        self._bar: Any = None
        self._setup_torch()
        self._build()

    # -- set-up ---------------------------------------------------------------
    def _setup_torch(self) -> None:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # warn_only: CUDA has no deterministic backward for bilinear interpolation or
            # reflection padding (the guide's resize, DPC's grid, odd sizes); those warn.
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        cuda = self.ctx.device.type == "cuda"
        if cfg.amp == "fp16" and not cuda:
            raise RecipeError(
                f"{self.source}: train.amp=fp16 (float16 with loss scaling) needs a CUDA device; "
                f"this run is on {self.ctx.device}: use train.amp=off (or auto)"
            )
        self.precision = {"auto": "bf16" if cuda else "fp32", "off": "fp32"}.get(cfg.amp, cfg.amp)
        if self.precision == "bf16" and not cuda:
            self.say("train.amp=bf16 applies on CUDA only; training in float32 on the CPU", logging.WARNING)
            self.precision = "fp32"
        self.amp: bool | str = self.precision if self.precision != "fp32" else False  # autocast_context's switch
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def _build(self) -> None:
        from restorekit.engine.parts import build_training_parts, has_unused_parameters

        cfg, device = self.cfg, self.ctx.device
        seed_everything(cfg.seed)  # same initial weights on every rank
        parts = build_training_parts(self.recipe, cfg, device, self.source)
        self.model, self.loss_fn, self.loss_name, self.params = (
            parts.model,
            parts.loss_fn,
            parts.loss_name,
            parts.params,
        )
        self.optimizer, self.schedule = parts.optimizer, parts.schedule
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay is not None else None
        self.scaling = LossScaling(self.precision == "fp16", device)
        forward: nn.Module = self.model
        self.ddp: nn.Module | None = None  # its no_sync() spares the all-reduce of accumulating micro-steps
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            forward = self.ddp = DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=has_unused_parameters(self.model)
            )
            self.say(
                f"DistributedDataParallel over {self.ctx.world_size} process(es), "
                f"backend {torch.distributed.get_backend()}"
            )
        if cfg.compile:
            forward = torch.compile(forward)  # type: ignore[assignment]
        self.forward_model = forward

    def stream(self) -> Any:
        if self._stream is None:
            from restorekit.data.build import build_train_stream

            # The stream takes the per-rank batch; rank r serves samples [r*b, (r+1)*b)
            # of the step's global batch, which is the same for every world size.
            self._stream = build_train_stream(
                self.recipe.get("data") or {},
                self.per_rank_batch,
                self.cfg.seed,
                self.ctx.rank,
                self.ctx.world_size,
                pin_memory=self.ctx.device.type == "cuda",
            )
        return self._stream

    def eval_sets(self) -> Mapping[str, Any]:
        if self._eval_sets is None:
            from restorekit.data.build import build_eval_sets

            self._eval_sets = build_eval_sets(self.recipe.get("data") or {})
        return self._eval_sets

    # -- the log ---------------------------------------------------------------
    def say(self, text: str, level: int = logging.INFO) -> None:
        """Log once per run (rank 0); the CLI shows it above the progress bar."""
        if self.ctx.is_main:
            logger.log(level, text)

    # -- run folder and resume --------------------------------------------------
    def _open_run(self, resume: str | None) -> tuple[Path, Path | None]:
        """(run folder, checkpoint to resume from), the folder locked for this run; on rank 0.

        The lock comes before anything in the folder is looked at or changed
        (leftovers cleaned, defective checkpoints set aside), so two runs never
        work on one folder.
        """
        run_dir, named = self._pick_run_dir(resume)
        self._lock = RunLock.acquire(run_dir)
        try:
            return run_dir, self._resume_point(run_dir, resume, named)
        except BaseException:
            self._lock.release(remove_folder=True)
            self._lock = None
            raise

    def _pick_run_dir(self, resume: str | None) -> tuple[Path, Path | None]:
        """(run folder, the checkpoint folder --resume named, if it named one); changes nothing."""
        cfg = self.cfg
        name = recipe_name(self.recipe, self.source)
        if resume not in (None, "auto"):
            path = Path(resume).resolve()  # 'ckpt-00000004' typed inside checkpoints/ has a parent too
            if path.is_dir() and ckpt.is_checkpoint_name(path.name):
                return path.parent.parent, path
            if path.is_dir():
                return path, None
            raise CheckpointError(f"--resume {resume}: no such run or checkpoint folder")
        if cfg.out_dir:
            return Path(cfg.out_dir), None
        if resume == "auto":
            # Only this recipe's own folders: 'exp-<stamp>', never 'exp-lr2-<stamp>'.
            own = re.compile(re.escape(name) + RUN_STAMP_PATTERN)
            candidates = sorted(
                (p for p in Path("runs").glob(f"{name}-*") if own.fullmatch(p.name)), key=lambda p: p.stat().st_mtime
            )
            with_ckpts = [p for p in candidates if ckpt.list_checkpoints(p)]
            return (with_ckpts[-1] if with_ckpts else default_run_dir(name)), None
        return default_run_dir(name), None

    def _resume_point(self, run_dir: Path, resume: str | None, named: Path | None) -> Path | None:
        """The checkpoint to continue from (None: a fresh start), checked against the folder."""
        if named is not None:
            newer = [p.name for s, p in ckpt.list_checkpoints(run_dir) if p.name > named.name]
            if newer:
                raise CheckpointError(
                    f"--resume {named}: its run folder holds newer checkpoints ({', '.join(newer)}) that "
                    f"continuing from it would overwrite; copy it into a new run folder, or delete them"
                )
            return named
        if resume is None:
            if ckpt.list_checkpoints(run_dir):
                raise CheckpointError(
                    f"run folder {run_dir} already holds checkpoints; pass --resume auto to continue "
                    f"it or choose another train.out_dir"
                )
            return None
        return self._latest(run_dir, required=resume != "auto")

    def _latest(self, run_dir: Path, required: bool) -> Path | None:
        ckpt.clean_incomplete(run_dir)
        # A checkpoint without an EMA is not defective (EMA may have been switched on since):
        # _load starts the average from its weights instead of setting the checkpoint aside.
        found = ckpt.latest_valid(run_dir)
        if found is None and required:
            raise CheckpointError(f"--resume {run_dir}: no valid checkpoint in {run_dir / ckpt.CKPT_DIR}")
        return found.path if found else None

    def _load(self, path: Path) -> int:
        """Restore everything from ``path``; returns the step to continue from."""
        from restorekit.frozen import trainable_state_dict
        from restorekit.state_dict import copy_into

        loaded = ckpt.load_checkpoint(path)
        copy_into(trainable_state_dict(self.model), loaded.model, f"checkpoint {path}", "the recipe's model")
        state = loaded.state
        if self.ema is not None and loaded.ema is not None:
            self.ema.load_state_dict(loaded.ema, updates=int(state.get("ema_updates", 0)))
        elif self.ema is not None:
            self.say(
                f"checkpoint {path} holds no EMA (the run trained without one so far); the EMA starts from its weights",
                logging.WARNING,
            )
            self.ema.load_state_dict(loaded.model, updates=0)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"checkpoint {path}: its optimizer state does not fit the recipe's "
                f"optimizer ({type(exc).__name__}: {exc})"
            ) from exc
        self.scaling.load_state_dict(state.get("loss_scaler"))
        self.nonfinite_streak = int(state.get("nonfinite_streak", 0))
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.best = state.get("best")
        rng = state.get("rng") or []
        if rng:
            same_world = len(rng) == self.ctx.world_size
            set_rng_state(rng[self.ctx.rank] if same_world else rng[0])
        if int(state.get("data_position", loaded.step)) != loaded.step:
            raise CheckpointError(f"checkpoint {path}: data position and step disagree")
        return loaded.step

    # -- checkpoints ----------------------------------------------------------------
    def _save(self, step: int, run_dir: Path, metrics: Mapping[str, Any] | None, is_best: bool) -> None:
        rng = dist_utils.gather_objects(self.ctx, rng_state())
        # Rank 0 writes; the others wait for it, and all stop together when the disk refuses.
        dist_utils.on_main(self.ctx, self._write_checkpoint, step, run_dir, metrics, is_best, rng)

    def _write_checkpoint(
        self, step: int, run_dir: Path, metrics: Mapping[str, Any] | None, is_best: bool, rng: list[Any]
    ) -> None:
        from restorekit.frozen import frozen_records, trainable_state_dict

        state = {
            "step": step,
            "data_position": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {**self.schedule.state_dict(), "lr": self.schedule(max(step - 1, 0))},
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "loss_scaler": self.scaling.state_dict(),
            "nonfinite_streak": self.nonfinite_streak,
            "nonfinite_total": self.nonfinite_total,
            "best": self.best,
            "rng": rng,
            "world_size": self.ctx.world_size,
        }
        # nonfinite_streak > 0 marks a checkpoint written while steps are being skipped.
        meta = {
            "metrics": dict(metrics or {}),
            "frozen": frozen_records(self.model),
            "world_size": self.ctx.world_size,
            "nonfinite_streak": self.nonfinite_streak,
        }
        ckpt.save_checkpoint(
            run_dir,
            step,
            trainable_state_dict(self.model),
            self.ema.state_dict() if self.ema is not None else None,
            state,
            meta,
        )
        if is_best and self.best is not None:
            ckpt.write_best(run_dir, self.best["step"], self.best["score"], self.best.get("metric", "psnr"))
        ckpt.prune(run_dir, self.cfg.keep_last, self.cfg.keep_best)

    # -- one step -------------------------------------------------------------------
    def _step(self, batch: Mapping[str, Any], step: int) -> StepResult:
        """One optimizer step over ``train.accumulate`` micro-batches (engine/accumulate.py).

        The loss, gradient norm and terms stay on the device. The NaN guard's flags are
        the step's one host read: whether the optimizer steps depends on them.
        """
        device, count = self.ctx.device, self.cfg.accumulate
        if batch["lq"].shape[0] != self.per_rank_batch:
            raise RecipeError(
                f"the data stream gave a batch of {batch['lq'].shape[0]} on rank {self.ctx.rank}; expected "
                f"train.batch_size / world size = {self.per_rank_batch}"
            )
        lr = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        totals = LossTotals()
        for index, (lq, gt) in enumerate(micro_batches(batch, count)):
            lq = lq.to(device, non_blocking=True).contiguous(memory_format=self.memory_format)
            gt = gt.to(device, non_blocking=True).contiguous(memory_format=self.memory_format)
            with gradient_sync(self.ddp, last=index == count - 1):
                with autocast_context(device, self.amp):
                    result = forward_loss(self.model, self.forward_model, self.loss_fn, lq, gt, self.loss_name)
                loss = result.total.float() / count
                self.scaling.scale(loss).backward()
            totals.add(loss, result.terms, 1.0 / count)
        self.scaling.unscale(self.optimizer)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        assert totals.loss is not None  # accumulate >= 1
        flags = torch.stack([totals.loss, (~torch.isfinite(totals.loss)).float(), (~torch.isfinite(grad_norm)).float()])
        dist_utils.all_reduce_sum(self.ctx, flags)
        loss_bad, grads_bad = (value > 0 for value in flags[1:].tolist())  # the step's one host read
        if loss_bad or grads_bad:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        self.scaling.update()
        overflow = self.scaling.is_overflow(not loss_bad, not grads_bad)
        return StepResult(
            flags[0] / self.ctx.world_size,
            grad_norm.detach(),
            totals.terms,
            skipped=loss_bad or grads_bad,
            overflow=overflow,
        )

    # -- validation -----------------------------------------------------------------
    def validate(
        self, step: int, *, max_images: int | None, keep_for_grid: int = 0, use_ema: bool | None = None
    ) -> dict[str, Any]:
        from restorekit.engine.evaluate import evaluate

        use_ema = self.eval_cfg.use_ema if use_ema is None else use_ema
        # NaN outputs score NaN here, on every rank alike (the sums are all-reduced); a rank
        # raising alone would leave the others waiting in the all-reduce.
        args = dict(
            amp=self.amp,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            max_images=max_images,
            keep_for_grid=keep_for_grid,
            allow_nonfinite=True,
        )
        if self.ema is not None and use_ema:
            with self.ema.swapped_in(self.model):
                result = evaluate(self.model, self.eval_sets(), self.eval_cfg, self.ctx.device, **args)
        else:
            result = evaluate(self.model, self.eval_sets(), self.eval_cfg, self.ctx.device, **args)
        result["ema"] = bool(self.ema is not None and use_ema)
        return result

    # -- the loop ---------------------------------------------------------------------
    def run(self, resume: str | None = None, eval_after: bool = False) -> TrainResult:
        cfg, ctx = self.cfg, self.ctx
        wants_eval = cfg.val_every > 0 or eval_after or self.eval_cfg.after_train
        if wants_eval and not self.eval_sets():
            raise RecipeError(
                f"{self.source}: train.val_every / eval.after_train / --eval-after need test "
                f"images, but the data section has no 'val' tasks"
            )
        self.stream()  # a data section that fails does so before the run folder exists
        self._lock: RunLock | None = None
        run_dir, resume_from = dist_utils.on_main(ctx, self._open_run, resume)
        self.run_dir = Path(run_dir)
        started = False
        try:
            start, log = self._start(resume_from)
            started = True
            with StopSignals() as stop:
                validation = self._loop(start, log, stop)
            final_eval = None
            if eval_after or self.eval_cfg.after_train:
                final_eval = self.final_evaluation()
        finally:
            if self._lock is not None:
                self._lock.release(remove_folder=not started)
                self._lock = None
        return TrainResult(self.run_dir, cfg.iterations, self.nonfinite_total, validation, final_eval)

    def _start(self, resume_from: Path | None) -> tuple[int, MetricsLog]:
        """Load the checkpoint (if any) and write the run files; the step to start from and the log."""
        cfg, ctx = self.cfg, self.ctx
        self.nonfinite_streak = 0
        self.nonfinite_total = 0
        self.best: dict[str, Any] | None = None
        start = 0
        if resume_from is not None:
            start = self._load(Path(resume_from))
        log = MetricsLog(self.run_dir / METRICS_FILE)
        if ctx.is_main:
            from restorekit.frozen import frozen_records
            from restorekit.params import count_params

            # The log reads as one run: lines past the checkpoint, or all lines of a run that
            # died before its first checkpoint (start 0), belong to no weights that exist.
            log.truncate_after(start)
            if resume_from is not None:
                ckpt.forget_best_after(self.run_dir, start)
                if self.best is not None:
                    ckpt.write_best(
                        self.run_dir, self.best["step"], self.best["score"], self.best.get("metric", "psnr")
                    )
                self.say(f"resuming {self.run_dir} from step {start} ({resume_from})")
                self._say_recipe_changes()
            trainable, frozen = count_params(self.model)
            write_run_files(
                self.run_dir,
                self.recipe,
                {
                    "source": self.source,
                    "world_size": ctx.world_size,
                    "device": str(ctx.device),
                    "amp": self.precision,
                    "resumed_from": str(resume_from) if resume_from else None,
                    "params": {"trainable": trainable, "frozen": frozen},
                    "frozen": frozen_records(self.model),
                },
            )
            self.say(f"run folder: {self.run_dir}")
            self.say(
                f"model: {trainable:,} trainable and {frozen:,} frozen parameters; "
                f"{ctx.world_size} process(es) on {ctx.device}, {self.precision}; global batch "
                f"{cfg.batch_size} = {ctx.world_size} x {cfg.accumulate} x micro-batch {self.micro_batch}"
            )
            for note in random_backbone_notes(self.model):
                self.say(note, logging.WARNING)
        dist_utils.barrier(ctx)
        return start, log

    def _say_recipe_changes(self) -> None:
        from restorekit.engine.run_folder import RECIPE_FILE
        from restorekit.recipes import is_missing, load_yaml, recipe_diff

        def show(value: Any) -> str:
            return "(absent)" if is_missing(value) else repr(value)

        saved = self.run_dir / RECIPE_FILE
        if not saved.is_file():
            return
        changes = [row for row in recipe_diff(load_yaml(saved), self.recipe) if row[0] != "train.out_dir"]
        for key, before, after in changes:
            self.say(f"recipe changed since the run started: {key}: {show(before)} -> {show(after)}")

    def _loop(self, start: int, log: MetricsLog, stop: StopSignals) -> dict[str, Any] | None:
        cfg, ctx = self.cfg, self.ctx
        validation = None
        if start >= cfg.iterations:
            self.say(f"nothing to train: the run is already at step {start} of {cfg.iterations}")
            return validation
        batches: Iterator[Mapping[str, Any]] = iter(self.stream().batches(start))
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        self._bar = tqdm(
            total=cfg.iterations,
            initial=start,
            disable=not (ctx.is_main and cfg.progress),
            dynamic_ncols=True,
            mininterval=0.5 if tty else 10.0,
            file=sys.stderr,
            unit="it",
        )
        # metrics.jsonl (`log`) is written by the jsonl logger when train.loggers lists it.
        loggers = open_loggers(cfg.loggers, self.run_dir, ctx.is_main)
        loggers.add_text("recipe", dump_recipe(self.recipe))
        window = WindowMean()
        t_last, step, s_last = time.perf_counter(), start, start
        try:
            self.model.train()
            while step < cfg.iterations:
                batch = next(batches)
                result = self._step(batch, step)
                step += 1
                if result.overflow:
                    self._on_overflow(step, loggers)
                elif result.skipped:
                    self._on_skip(step, float(result.loss), float(result.grad_norm), loggers)
                else:
                    self.nonfinite_streak = 0
                    window.add(result.loss)
                self._bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.iterations:
                    self._log_step(step, result, window, (step - s_last), t_last, loggers)
                    window, t_last, s_last = WindowMean(), time.perf_counter(), step
                is_val = cfg.val_every > 0 and (step % cfg.val_every == 0 or step == cfg.iterations)
                is_best = False
                scores = None
                if is_val:
                    keep = self.eval_cfg.grid_images if loggers.takes_images else 0
                    validation = self.validate(step, max_images=cfg.val_max_images, keep_for_grid=keep)
                    loggers.add_images(step, grid_images(validation.pop("grid", {})))
                    scores = self._report_validation(step, validation, loggers)
                    is_best = self._update_best(step, validation["mean"])
                saved = step % cfg.ckpt_every == 0 or step == cfg.iterations or is_best
                if saved:
                    self._save(step, self.run_dir, scores, is_best)
                self._stop_on_signal(stop, step, saved)
        finally:
            self._bar.close()
            self._bar = None
            loggers.close()
        return validation

    def _log_step(
        self, step: int, result: StepResult, window: WindowMean, steps: int, since: float, loggers: LoggerSet
    ) -> None:
        """A log line: the step's device numbers read in one transfer, then written by every logger."""
        numbers = read_numbers(
            {
                "loss": result.loss,
                "loss_avg": window.value(),
                "grad_norm": result.grad_norm,
                **{f"terms/{name}": value for name, value in result.terms.items()},
            }
        )
        seconds = max(time.perf_counter() - since, 1e-9)  # after the read: the device's queue is done
        lr = self.schedule(step - 1)
        record = {
            "step": step,
            "loss": numbers["loss"],
            "loss_avg": numbers["loss_avg"],
            "lr": lr,
            "grad_norm": numbers["grad_norm"],
            "terms": {name: numbers[f"terms/{name}"] for name in result.terms},
            "it_s": steps / seconds,
            "skipped_total": self.nonfinite_total,
        }
        if self.ctx.device.type == "cuda":  # the allocator's own count: no device sync
            record["peak_mem_mib"] = torch.cuda.max_memory_allocated(self.ctx.device) / 2**20
        if self.ctx.is_main:
            loggers.write(record)
        self._bar.set_postfix(loss=f"{numbers['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)

    def _on_overflow(self, step: int, loggers: LoggerSet) -> None:
        """fp16: the gradients overflowed at this loss scale; the scaler lowered it and the step
        was skipped. Expected now and then (most often in the first steps), no divergence."""
        scale = self.scaling.current_scale()
        self.say(
            f"step {step}: fp16 gradients overflowed; loss scale lowered to {scale:g}, step skipped", logging.DEBUG
        )
        if self.ctx.is_main:
            loggers.write({"step": step, "event": "scaler_skip", "scale": scale})

    def _stop_on_signal(self, stop: StopSignals, step: int, saved: bool) -> None:
        """After a SIGTERM/SIGINT on any rank: checkpoint this step (unless just done) and stop."""
        signum = stop.agreed(self.ctx)
        if signum is None:
            return
        if not saved:
            self._save(step, self.run_dir, None, False)
        where = self.run_dir / ckpt.CKPT_DIR / ckpt.ckpt_name(step)
        raise TrainingInterrupted(
            f"stopped by {signal_name(signum)} at step {step} of {self.cfg.iterations}; "
            f"checkpoint {where} written; continue with --resume auto",
            signum,
        )

    def _update_best(self, step: int, mean: Mapping[str, float]) -> bool:
        """Record ``step`` as the best when ``train.best_metric`` improved (by ``train.best_mode``)."""
        metric, score = self.cfg.best_metric, mean.get(self.cfg.best_metric)
        if score is None or not math.isfinite(score):
            return False
        if self.best is not None and self.best.get("metric", "psnr") == metric:
            better = score > self.best["score"] if self.cfg.best_mode == "max" else score < self.best["score"]
            if not better:
                return False
        self.best = {"step": step, "score": score, "metric": metric}
        return True

    def _on_skip(self, step: int, loss: float, grad_norm: float, log: LoggerSet) -> None:
        self.nonfinite_streak += 1
        self.nonfinite_total += 1
        self.say(
            f"step {step}: non-finite loss ({loss}) or gradient norm ({grad_norm}); step skipped "
            f"({self.nonfinite_streak} in a row, {self.nonfinite_total} in all)",
            logging.WARNING,
        )
        if self.ctx.is_main:
            log.write(
                {
                    "step": step,
                    "event": "nonfinite_skip",
                    "loss": loss,
                    "grad_norm": grad_norm,
                    "in_a_row": self.nonfinite_streak,
                }
            )
        if self.nonfinite_streak >= self.cfg.max_nonfinite:
            raise TrainingDiverged(
                f"training diverged: {self.nonfinite_streak} steps in a row had a non-finite loss or "
                f"gradient (train.max_nonfinite = {self.cfg.max_nonfinite}) at step {step}; "
                f"{ckpt.describe_last_good(self.run_dir)}. "
                f"Lower train.lr, set train.grad_clip, or check the data"
            )

    def _report_validation(self, step: int, result: Mapping[str, Any], log: LoggerSet) -> dict[str, Any]:
        from restorekit.engine.evaluate import markdown_table, protocol

        info = protocol(self.eval_cfg, ema=result.get("ema"))
        if self.ctx.is_main:
            self.say(f"\nvalidation at step {step}:\n" + markdown_table(result, info))
            log.write({"step": step, "event": "validation", "tasks": result["tasks"], "mean": result["mean"]})
        return {"val_mean": result["mean"], "val_tasks": result["tasks"]}

    def final_evaluation(self) -> dict[str, Any]:
        """Score the final (EMA) weights on the held-out images; write eval.md, eval.json, grid."""
        from restorekit.engine.evaluate import markdown_table, protocol, refuse_nan_scores, write_grid, write_report

        ecfg = self.eval_cfg
        result = self.validate(
            self.cfg.iterations, max_images=ecfg.max_images, keep_for_grid=ecfg.grid_images if ecfg.grid else 0
        )
        refuse_nan_scores(result, f"the final evaluation of {self.run_dir}")
        info = protocol(ecfg, ema=result.get("ema"))
        if self.ctx.is_main:
            out = self.run_dir / "eval"
            notes = random_backbone_notes(self.model)
            write_report(out, result, info, step=self.cfg.iterations, notes=notes)
            lines = [
                "",
                f"evaluation of the final weights on the held-out images ({out}):",
                markdown_table(result, info),
            ]
            worse = [t for t, row in result["tasks"].items() if "psnr" in row and row["psnr"] <= row["psnr_in"]]
            if "psnr" in result["mean"]:
                lines.append(
                    "restored beats the input on every task"
                    if not worse
                    else f"WARNING: restored does not beat the input on: {', '.join(worse)}"
                )
            if ecfg.grid and result.get("grid"):
                note = "backbone randomly initialised (no pretrained weights)" if notes else ""
                grid = write_grid(out / "grid.png", result, note=note)
                lines.append(f"before/after grid: {grid}")
            lines += notes
            result["report"] = "\n".join(lines)
        result.pop("grid", None)
        return result


def train(
    recipe: Mapping[str, Any],
    *,
    source: str = "recipe",
    resume: str | None = None,
    eval_after: bool = False,
    stream: Any = None,
    eval_sets: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``recipe`` (resolved) and return where its results are.

    ``resume``: None (fresh), ``"auto"`` (the newest valid checkpoint of the run
    folder, if any) or a run / checkpoint folder. ``stream`` and ``eval_sets``
    replace the recipe's data section (tests and notebooks pass their own).
    """
    launched = dist_utils.launched_world_size() > 1 or dist_utils.launched_by_torchrun()
    try:
        trainer = Trainer(recipe, source=source, stream=stream, eval_sets=eval_sets)
        return trainer.run(resume=resume, eval_after=eval_after)
    finally:
        if launched:
            dist_utils.shutdown()
