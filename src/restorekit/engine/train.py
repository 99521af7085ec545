"""Training: iteration-based, resumable bit for bit, one process or torchrun DDP.

:func:`train` runs a resolved recipe. :class:`Trainer` puts a run together from parts
that each do one job:

* the torch set-up and precision (:mod:`restorekit.engine.precision`);
* the step (:class:`~restorekit.engine.step.TrainStep`): model, loss, optimizer,
  loss scaling, EMA, DDP, accumulation, gradient clipping and the NaN guard;
* the training state (:class:`~restorekit.engine.training_state.TrainingState`):
  checkpoint write and read, generator states, the best record;
* the run folder (:class:`~restorekit.engine.run.Run`): its choice, lock, resume
  point, run files and the recipe's changes since the run began;
* the loop (:class:`~restorekit.engine.loop.TrainLoop`), which sends its events to
  callbacks (:mod:`restorekit.engine.callbacks`): the loggers, the progress bar,
  the recipe's ``train.callbacks``, periodic validation and periodic checkpoints.

Every ``val_every`` steps the EMA weights are scored per task; every ``ckpt_every``
steps (and at the end, and when validation improves) rank 0 writes a checkpoint
atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from restorekit.data.build import build_eval_sets, build_train_stream
from restorekit.engine import distributed as dist_utils
from restorekit.engine.accumulate import micro_batch_size
from restorekit.engine.callbacks import (
    LoggerCallback,
    PeriodicCheckpoint,
    PeriodicValidation,
    ProgressBar,
    build_callbacks,
)
from restorekit.engine.config import EvalConfig, TrainConfig, eval_config, train_config
from restorekit.engine.distributed import DistContext
from restorekit.engine.ema import EMA
from restorekit.engine.evaluate import (
    evaluate,
    markdown_table,
    metric_directions,
    protocol,
    refuse_nan_scores,
    write_grid,
    write_report,
)
from restorekit.engine.loop import TrainingDiverged, TrainLoop
from restorekit.engine.parts import build_training_parts, has_unused_parameters
from restorekit.engine.precision import Precision, setup_torch
from restorekit.engine.run import Run, recipe_name
from restorekit.engine.scaler import LossScaling
from restorekit.engine.signals import StopSignals
from restorekit.engine.step import StepSettings, TrainStep, wrap_for_training
from restorekit.engine.training_state import TrainingState, rng_state, seed_everything, set_rng_state
from restorekit.errors import RecipeError
from restorekit.frozen import frozen_records, random_backbone_notes
from restorekit.params import count_params

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "recipe_name", "rng_state", "seed_everything",
           "set_rng_state", "train"]  # fmt: skip


@dataclass
class TrainResult:
    """What a finished run leaves: its folder, its last step and scores."""

    run_dir: Path
    step: int
    skipped_steps: int = 0
    validation: dict[str, Any] | None = None
    final_eval: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Builds the parts of one run; :meth:`run` trains from a fresh start or a checkpoint.

    ``train_step`` is the step the loop runs (replace it with a wrapper to watch
    steps); ``state`` the training state; ``model``, ``optimizer`` and the like are
    the step's.
    """

    def __init__(
        self,
        recipe: Mapping[str, Any],
        *,
        source: str = "recipe",
        stream: Any = None,
        eval_sets: Mapping[str, Any] | None = None,
    ) -> None:
        self.recipe, self.source = dict(recipe), source
        self.cfg: TrainConfig = train_config(recipe, source)
        self.eval_cfg: EvalConfig = eval_config(recipe, source)
        names = self.eval_cfg.metric_names()
        # The best rule watches the metric the recipe names, or explicitly the first eval metric.
        self.best_metric = self.cfg.best_metric or names[0]
        if self.best_metric not in names:
            raise RecipeError(
                f"{source}: train.best_metric {self.best_metric!r} is not among eval.metrics ({', '.join(names)})"
            )
        self.metric_directions = metric_directions(self.eval_cfg)
        mode = self.cfg.best_mode  # given: it overrides the metric's own direction
        self.higher_is_better = mode == "max" if mode else self.metric_directions[self.best_metric]
        # Built first: a bad knob fails before anything else, and no callback draws from the seeded generators.
        self.user_callbacks = build_callbacks(self.cfg.callbacks)
        self.ctx: DistContext = dist_utils.init(self.cfg.device)
        self.per_rank_batch = dist_utils.per_rank_batch(self.cfg.batch_size, self.ctx.world_size)
        self.micro_batch = micro_batch_size(self.cfg.batch_size, self.ctx.world_size, self.cfg.accumulate)
        self._stream, self._eval_sets = stream, eval_sets
        self.precision: Precision = setup_torch(self.cfg, self.ctx.device, source, is_main=self.ctx.is_main)
        self.train_step = self.build_step()
        self.state = TrainingState(
            self.train_step, self.ctx, keep_last=self.cfg.keep_last, keep_best=self.cfg.keep_best
        )
        self.run_folder = Run(self.recipe, self.cfg, self.ctx, source)

    def build_step(self) -> TrainStep:
        """The model, loss, optimizer and schedule of the recipe, as one step object."""
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed)  # same initial weights on every rank
        parts = build_training_parts(self.recipe, cfg, ctx.device, self.source)
        ema = EMA(parts.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay is not None else None
        scaling = LossScaling(self.precision.name == "fp16", ctx.device)
        find_unused = ctx.distributed and has_unused_parameters(parts.model)
        forward, ddp = wrap_for_training(parts.model, ctx, find_unused=find_unused, compile=cfg.compile)
        settings = StepSettings(
            cfg.accumulate, cfg.grad_clip, self.precision.autocast, self.precision.memory_format, self.per_rank_batch
        )
        return TrainStep(
            parts.model, parts.loss_fn, parts.optimizer, parts.schedule, params=parts.params,
            loss_name=parts.loss_name, settings=settings, ema=ema, scaling=scaling, ctx=ctx, forward=forward, ddp=ddp,
        )  # fmt: skip

    # -- the step's parts, for callers that inspect a trainer -------------------------------
    @property
    def model(self) -> nn.Module:
        return self.state.train_step.model

    @property
    def loss_fn(self) -> nn.Module:
        return self.state.train_step.loss_fn

    @property
    def optimizer(self) -> Any:
        return self.state.train_step.optimizer

    @property
    def ema(self) -> EMA | None:
        return self.state.train_step.ema

    # -- data ---------------------------------------------------------------------------------
    def stream(self) -> Any:
        if self._stream is None:
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
            self._eval_sets = build_eval_sets(self.recipe.get("data") or {})
        return self._eval_sets

    def say(self, text: str, level: int = logging.INFO) -> None:
        """Log once per run (rank 0); the CLI shows it above the progress bar."""
        if self.ctx.is_main:
            logger.log(level, text)

    # -- the run --------------------------------------------------------------------------------
    def run(self, resume: str | None = None, eval_after: bool = False) -> TrainResult:
        """Train; ``resume`` as :func:`train` takes it (``"auto"`` by itself after torchrun restarted the workers)."""
        cfg = self.cfg
        if dist_utils.elastic_resume(resume) != resume:
            self.say(
                f"torchrun restarted the workers (restart {dist_utils.restart_count()}): continuing from "
                f"the run's newest checkpoint, as --resume auto"
            )
            resume = "auto"
        wants_eval = cfg.val_every > 0 or eval_after or self.eval_cfg.after_train
        if wants_eval and not self.eval_sets():
            raise RecipeError(
                f"{self.source}: train.val_every / eval.after_train / --eval-after need test "
                f"images, but the data section has no 'val' tasks"
            )
        self.stream()  # a data section that fails does so before the run folder exists
        run_dir = self.run_folder.open(resume)
        try:
            start = self.start()
            loop = TrainLoop(
                self.train_step, self.state, self.callbacks(run_dir), cfg=cfg, run_dir=run_dir,
                best_metric=self.best_metric, metric_directions=self.metric_directions,
                higher_is_better=self.higher_is_better, agree_requests=bool(self.user_callbacks),
            )  # fmt: skip
            with StopSignals() as signals:
                step = loop.run(iter(self.stream().batches(start)), start, signals)
            final_eval = None
            if eval_after or self.eval_cfg.after_train:
                final_eval = self.final_evaluation(step)
        finally:
            self.run_folder.close()
        return TrainResult(run_dir, step, self.state.nonfinite_total, loop.validation, final_eval)

    def start(self) -> int:
        """Load the checkpoint to resume from (if any) and write the run files; the step to start from."""
        ctx, run, model = self.ctx, self.run_folder, self.model
        start = self.state.load(run.resume_from) if run.resume_from is not None else 0
        if ctx.is_main:
            trainable, frozen = count_params(model)
            info = {
                "world_size": ctx.world_size,
                "device": str(ctx.device),
                "amp": self.precision.name,
                "resumed_from": str(run.resume_from) if run.resume_from else None,
                "params": {"trainable": trainable, "frozen": frozen},
                "frozen": frozen_records(model),
            }
            run.write_start_files(start, info)
            if run.resume_from is not None:
                self.state.record_best(run.run_dir)  # the checkpoint's best, after a later one was forgotten
            self.say(
                f"model: {trainable:,} trainable and {frozen:,} frozen parameters; "
                f"{ctx.world_size} process(es) on {ctx.device}, {self.precision.name}; global batch "
                f"{self.cfg.batch_size} = {ctx.world_size} x {self.cfg.accumulate} x micro-batch {self.micro_batch}"
            )
            for note in random_backbone_notes(model):
                self.say(note, logging.WARNING)
        dist_utils.barrier(ctx)
        run.started = True
        return start

    def callbacks(self, run_dir: Path) -> list[Any]:
        """The run's own jobs as callbacks, the recipe's ``train.callbacks`` before validation and checkpoint.

        So every callback hears a step before the validation and the checkpoint of that step.
        """
        cfg, ecfg = self.cfg, self.eval_cfg
        log = LoggerCallback(cfg.loggers, run_dir, self.recipe, self.ctx.is_main)
        validation = PeriodicValidation(
            cfg.val_every, cfg.val_max_images, ecfg.grid_images, self.validate, self.report_validation, log
        )
        bar = ProgressBar(self.ctx.is_main and cfg.progress)
        return [log, bar, *self.user_callbacks, validation, PeriodicCheckpoint(cfg.ckpt_every)]

    # -- validation ---------------------------------------------------------------------------
    def validate(
        self, step: int, *, max_images: int | None, keep_for_grid: int = 0, use_ema: bool | None = None
    ) -> dict[str, Any]:
        use_ema = self.eval_cfg.use_ema if use_ema is None else use_ema
        # NaN outputs score NaN here, on every rank alike (the sums are all-reduced); a rank
        # raising alone would leave the others waiting in the all-reduce.
        args = dict(
            amp=self.precision.autocast,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            max_images=max_images,
            keep_for_grid=keep_for_grid,
            allow_nonfinite=True,
        )
        model, ema = self.model, self.ema
        if ema is not None and use_ema:
            with ema.swapped_in(model):
                result = evaluate(model, self.eval_sets(), self.eval_cfg, self.ctx.device, **args)
        else:
            result = evaluate(model, self.eval_sets(), self.eval_cfg, self.ctx.device, **args)
        result["ema"] = bool(ema is not None and use_ema)
        return result

    def report_validation(self, step: int, result: Mapping[str, Any]) -> None:
        if self.ctx.is_main:
            info = protocol(self.eval_cfg, ema=result.get("ema"))
            self.say(f"\nvalidation at step {step}:\n" + markdown_table(result, info))

    def final_evaluation(self, step: int | None = None) -> dict[str, Any]:
        """Score the final (EMA) weights on the held-out images; write eval.md, eval.json, grid."""
        ecfg, step = self.eval_cfg, self.cfg.iterations if step is None else step
        run_dir = self.run_folder.run_dir
        result = self.validate(step, max_images=ecfg.max_images, keep_for_grid=ecfg.grid_images if ecfg.grid else 0)
        refuse_nan_scores(result, f"the final evaluation of {run_dir}")
        info = protocol(ecfg, ema=result.get("ema"))
        if self.ctx.is_main:
            out = run_dir / "eval"
            notes = random_backbone_notes(self.model)
            write_report(out, result, info, step=step, notes=notes)
            lines = [
                "",
                f"evaluation of the final weights on the held-out images ({out}):",
                markdown_table(result, info),
            ]
            lines.append(self.input_comparison(result))
            if ecfg.grid and result.get("grid"):
                note = "backbone randomly initialised (no pretrained weights)" if notes else ""
                grid = write_grid(out / "grid.png", result, note=note)
                lines.append(f"before/after grid: {grid}")
            lines += notes
            result["report"] = "\n".join(lines)
        result.pop("grid", None)
        return result

    def input_comparison(self, result: Mapping[str, Any]) -> str:
        """Whether the restored images beat their inputs on every task, by the best metric in its direction."""
        metric, higher = self.best_metric, self.higher_is_better
        worse = [task for task, row in result["tasks"].items()
                 if not (row[metric] > row[f"{metric}_in"] if higher else row[metric] < row[f"{metric}_in"])]  # fmt: skip
        if not worse:
            return f"restored beats the input on every task ({metric})"
        return f"WARNING: restored does not beat the input on: {', '.join(worse)} ({metric})"


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
