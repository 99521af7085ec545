"""The training loop: steps, the NaN guard's policy, the best rule, and events to callbacks.

Each step runs the public :class:`~restorekit.engine.step.TrainStep`, then the loop
sends what happened to its callbacks (restorekit.engine.callbacks): a scaler overflow,
a skipped step, the step itself (with the log line at log steps). Callbacks validate
(:meth:`TrainLoop.validated` applies the best rule), checkpoint (:meth:`TrainLoop.save`)
and may ask the run to stop (:meth:`TrainLoop.request_stop`). After every step the
ranks agree whether to stop (a stop signal on any rank, or a request); a stop writes
this step's checkpoint unless it was just written.

Under torchrun the agreement on signals rides on the step's own all-reduce (the NaN
guard's flags): one all-reduce per step. A request from the recipe's callbacks may
come on one rank alone, after that all-reduce; a run with such callbacks
(``agree_requests``) agrees on requests in a second tiny all-reduce, so every rank
stops at the step the request was made.

NaN guard policy: a skipped step advances the counter (the batch is spent and the rate
follows the counter, so a poisoned batch is never retried); ``train.max_nonfinite``
skipped steps in a row abort the run with :class:`TrainingDiverged`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from restorekit.contracts import Callback
from restorekit.engine import checkpoint as ckpt
from restorekit.engine.accumulate import StepResult, WindowMean, read_numbers
from restorekit.engine.callbacks import CheckpointEvent, OverflowEvent, SkipEvent, StepEvent, StopEvent, ValidationEvent
from restorekit.engine.config import TrainConfig
from restorekit.engine.loggers import grid_images
from restorekit.engine.signals import StopSignals, TrainingInterrupted, agreed_signal, signal_name
from restorekit.engine.step import TrainStep
from restorekit.engine.training_state import BestRecord, TrainingState, improved
from restorekit.errors import RestorekitError

logger = logging.getLogger(__name__)


class TrainingDiverged(RestorekitError, RuntimeError):
    """Too many non-finite steps in a row."""


class TrainLoop:
    """Runs ``step`` (a :class:`TrainStep`, or a wrapper around one) from a start step to ``train.iterations`` and tells ``callbacks`` what happens.

    ``best_metric`` is the validation mean the best rule watches, ``metric_directions``
    each eval metric's ``higher_is_better`` and ``higher_is_better`` the best rule's
    direction. Callbacks read ``step``, ``iterations``, ``run_dir``, ``state`` (the best
    record, the NaN guard's counters) and ``validation`` (the last scores).
    ``agree_requests``: some callback may call :meth:`request_stop` (on one rank alone),
    so under torchrun the ranks agree on requests after every step.
    """

    def __init__(
        self,
        step: Callable[[Mapping[str, Any], int], StepResult],
        state: TrainingState,
        callbacks: Sequence[Callback],
        *,
        cfg: TrainConfig,
        run_dir: Path,
        best_metric: str,
        metric_directions: Mapping[str, bool],
        higher_is_better: bool,
        agree_requests: bool = True,
    ) -> None:
        self.run_step, self.state, self.callbacks = step, state, list(callbacks)
        self.agree_requests = agree_requests
        self.train_step: TrainStep = state.train_step  # its model, schedule and loss scaling
        self.cfg, self.ctx, self.run_dir = cfg, state.ctx, run_dir
        self.iterations = cfg.iterations
        self.best_metric, self.metric_directions = best_metric, dict(metric_directions)
        self.higher_is_better = higher_is_better
        self.step = 0  # steps done
        self.validation: dict[str, Any] | None = None  # the last validation's result
        self.scores: dict[str, Any] | None = None  # this step's validation, for its checkpoint's meta.json
        self.best_step: int | None = None  # the step whose validation set the best record in this run
        self.saved_step: int | None = None  # the step of the last checkpoint written
        self.stop_reason: str | None = None  # a callback asked to stop
        self.window = WindowMean()  # the loss of the good steps since the last log line
        self.window_start = (time.perf_counter(), 0)  # (time, step) of the last log line

    # -- what callbacks call ---------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop after this step (its checkpoint written); the run ends cleanly."""
        self.stop_reason = self.stop_reason or reason

    def best_at(self, step: int) -> bool:
        """Whether the validation of ``step`` set the best record."""
        return self.best_step == step

    def validated(self, step: int, result: dict[str, Any]) -> None:
        """Take a validation's scores: apply the best rule, then tell every callback."""
        images = grid_images(result.pop("grid", {}))
        self.validation = result
        mean = result["mean"]
        score = mean.get(self.best_metric)
        is_best = improved(self.state.best, self.best_metric, score, self.higher_is_better)
        if is_best:
            self.state.best = BestRecord(step, float(score), self.best_metric)
            self.best_step = step
        self.scores = {"val_mean": mean, "val_tasks": result["tasks"]}
        event = ValidationEvent(step, result["tasks"], mean, is_best, images)
        self.emit(lambda callback: callback.on_validation(self, event))

    def save(self, step: int) -> None:
        """Write the checkpoint of ``step`` (a new best is recorded as such), then tell every callback."""
        is_best = self.best_at(step)
        path = self.state.save(step, self.run_dir, self.scores, is_best)
        self.saved_step = step
        event = CheckpointEvent(step, path, is_best)
        self.emit(lambda callback: callback.on_checkpoint(self, event))

    def emit(self, hook: Callable[[Callback], None]) -> None:
        for callback in self.callbacks:
            hook(callback)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, batches: Iterator[Mapping[str, Any]], start: int, signals: StopSignals) -> int:
        """Train from ``start`` on ``batches`` (the stream from ``start``); the step it ended at."""
        self.step = start
        if start >= self.iterations:
            if self.ctx.is_main:
                logger.info("nothing to train: the run is already at step %d of %d", start, self.iterations)
            return start
        self.window_start = (time.perf_counter(), start)
        self.emit(lambda callback: callback.on_train_start(self, start))
        if self.ctx.distributed:
            self.train_step.votes = signals.votes  # the stop votes ride on the step's all-reduce
        try:
            self.train_step.model.train()
            while self.step < self.iterations:
                result = self.run_step(next(batches), self.step)
                self.step += 1
                self.after_step(result)
                if self.stop_agreed(signals, result):
                    break
        finally:
            self.train_step.votes = None
            self.emit(lambda callback: callback.on_train_end(self, self.step))
        return self.step

    def after_step(self, result: StepResult) -> None:
        """The NaN guard's policy, then the step event (with the log line at log steps)."""
        step = self.step
        self.scores = None
        if result.overflow:
            self.on_overflow()
        elif result.skipped:
            self.on_skip(result)
        else:
            self.state.nonfinite_streak = 0
            self.window.add(result.loss)
        record = None
        if step % self.cfg.log_every == 0 or step == self.iterations:
            record = self.log_record(result)
        event = StepEvent(step, result, record)
        self.emit(lambda callback: callback.on_step(self, event))

    def on_overflow(self) -> None:
        """fp16: the gradients overflowed at this loss scale; the scaler lowered it and the step
        was skipped. Expected now and then (most often in the first steps), no divergence."""
        scale = self.train_step.scaling.current_scale()
        if self.ctx.is_main:
            logger.debug("step %d: fp16 gradients overflowed; loss scale lowered to %g, step skipped", self.step, scale)
        event = OverflowEvent(self.step, scale)
        self.emit(lambda callback: callback.on_overflow(self, event))

    def on_skip(self, result: StepResult) -> None:
        state, step = self.state, self.step
        state.nonfinite_streak += 1
        state.nonfinite_total += 1
        event = SkipEvent(
            step, float(result.loss), float(result.grad_norm), state.nonfinite_streak, state.nonfinite_total
        )
        if self.ctx.is_main:
            logger.warning(
                "step %d: non-finite loss (%s) or gradient norm (%s); step skipped (%d in a row, %d in all)",
                step, event.loss, event.grad_norm, event.in_a_row, event.total,
            )  # fmt: skip
        self.emit(lambda callback: callback.on_skip(self, event))
        if state.nonfinite_streak >= self.cfg.max_nonfinite:
            raise TrainingDiverged(
                f"training diverged: {state.nonfinite_streak} steps in a row had a non-finite loss or "
                f"gradient (train.max_nonfinite = {self.cfg.max_nonfinite}) at step {step}; "
                f"{ckpt.describe_last_good(self.run_dir)}. "
                f"Lower train.lr, set train.grad_clip, or check the data"
            )

    def log_record(self, result: StepResult) -> dict[str, Any]:
        """A log line: the step's device numbers read in one transfer."""
        numbers = read_numbers(
            {
                "loss": result.loss,
                "loss_avg": self.window.value(),
                "grad_norm": result.grad_norm,
                **{f"terms/{name}": value for name, value in result.terms.items()},
            }
        )
        since, first = self.window_start
        seconds = max(time.perf_counter() - since, 1e-9)  # after the read: the device's queue is done
        lr = self.train_step.schedule(self.step - 1)
        record = {
            "step": self.step,
            "loss": numbers["loss"],
            "loss_avg": numbers["loss_avg"],
            "lr": lr,
            "grad_norm": numbers["grad_norm"],
            "terms": {name: numbers[f"terms/{name}"] for name in result.terms},
            "it_s": (self.step - first) / seconds,
            "skipped_total": self.state.nonfinite_total,
        }
        if self.ctx.device.type == "cuda":  # the allocator's own count: no device sync
            record["peak_mem_mib"] = torch.cuda.max_memory_allocated(self.ctx.device) / 2**20
        self.window, self.window_start = WindowMean(), (time.perf_counter(), self.step)
        return record

    def agreed_stop(self, signals: StopSignals, result: StepResult) -> tuple[int | None, bool]:
        """(the stop signal, whether a stop was requested), the same on every rank.

        One process: what it received. Torchrun: the signal from the votes the step's
        all-reduce summed; requests through :meth:`StopSignals.agree` when callbacks may
        make them (it agrees on signals too, so a signal after the step's all-reduce counts now).
        """
        requested = self.stop_reason is not None
        if not self.ctx.distributed:
            return signals.received, requested
        if self.agree_requests or not result.votes:
            return signals.agree(self.ctx, requested)
        return agreed_signal(result.votes), requested

    def stop_agreed(self, signals: StopSignals, result: StepResult) -> bool:
        """After a signal or a stop request on any rank: checkpoint this step (unless just done) and stop.

        A signal ends the run with :class:`TrainingInterrupted`; a request returns True.
        """
        signum, requested = self.agreed_stop(signals, result)
        if signum is None and not requested:
            return False
        step = self.step
        if self.saved_step != step:
            self.save(step)
        if signum is not None:
            where = self.run_dir / ckpt.CKPT_DIR / ckpt.ckpt_name(step)
            reason = (
                f"stopped by {signal_name(signum)} at step {step} of {self.iterations}; "
                f"checkpoint {where} written; continue with --resume auto"
            )
            self.emit(lambda callback: callback.on_stop(self, StopEvent(step, reason, signum)))
            raise TrainingInterrupted(reason, signum)
        reason = self.stop_reason or "another process asked to stop"
        if self.ctx.is_main:
            logger.info("step %d: %s", step, reason)
        self.emit(lambda callback: callback.on_stop(self, StopEvent(step, reason)))
        return True
