"""What a training run tells its callbacks, and the builtin callbacks.

The loop (:class:`~restorekit.engine.loop.TrainLoop`) sends every event to each
callback in turn; a callback keeps the :class:`~restorekit.contracts.Callback`
contract and may subclass :class:`Callback` to override only the hooks it needs.
The run's own jobs are callbacks too, in this order: the loggers (``metrics.jsonl``,
TensorBoard), the progress bar, the recipe's ``train.callbacks`` (the ``callback``
kind: builtin ``early_stopping``, or a plugin's), periodic validation, and the
periodic checkpoint last (so it saves what a validation of the same step found best).
Every callback hears a step's events in the order step, validation, checkpoint, stop.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from tqdm import tqdm  # the bar's package is imported when a run starts, not with the engine

from restorekit.building import build
from restorekit.engine.accumulate import StepResult
from restorekit.engine.loggers import LoggerSet, open_loggers
from restorekit.errors import RecipeError
from restorekit.recipes import dump_recipe

logger = logging.getLogger(__name__)


# -- the events ------------------------------------------------------------------------
@dataclass(frozen=True)
class StepEvent:
    """A step finished (``step`` steps are done). ``record``: the log line, at log steps only."""

    step: int
    result: StepResult  # device numbers: read them only when needed (a host read waits for the device)
    record: Mapping[str, Any] | None = None  # {"step", "loss", "loss_avg", "lr", "grad_norm", "terms", "it_s", ...}


@dataclass(frozen=True)
class OverflowEvent:
    """fp16: the gradients overflowed at this loss scale; the scaler lowered it to ``scale``, the step was skipped."""

    step: int
    scale: float


@dataclass(frozen=True)
class SkipEvent:
    """The NaN guard skipped the step: a non-finite loss or gradient norm."""

    step: int
    loss: float
    grad_norm: float
    in_a_row: int
    total: int


@dataclass(frozen=True)
class ValidationEvent:
    """Scores of the (EMA) weights at ``step``; ``is_best``: the monitored metric improved."""

    step: int
    tasks: Mapping[str, Mapping[str, float]]
    mean: Mapping[str, float]
    is_best: bool
    images: Mapping[str, Tensor]  # "val/<task>/<i>" -> input | restored | target (when a logger takes images)


@dataclass(frozen=True)
class CheckpointEvent:
    """A checkpoint of ``step`` was written to ``path``."""

    step: int
    path: Path
    is_best: bool


@dataclass(frozen=True)
class StopEvent:
    """The run stops early at ``step`` (after its checkpoint): a signal (``signum``) or a callback's request."""

    step: int
    reason: str
    signum: int | None = None


class Callback:
    """Every hook of the contract, doing nothing: override the ones you need."""

    def on_train_start(self, loop: Any, step: int) -> None:
        pass

    def on_step(self, loop: Any, event: StepEvent) -> None:
        pass

    def on_overflow(self, loop: Any, event: OverflowEvent) -> None:
        pass

    def on_skip(self, loop: Any, event: SkipEvent) -> None:
        pass

    def on_validation(self, loop: Any, event: ValidationEvent) -> None:
        pass

    def on_checkpoint(self, loop: Any, event: CheckpointEvent) -> None:
        pass

    def on_stop(self, loop: Any, event: StopEvent) -> None:
        pass

    def on_train_end(self, loop: Any, step: int) -> None:
        pass


# -- the run's own jobs ------------------------------------------------------------------
class LoggerCallback(Callback):
    """``train.loggers``: every record ``metrics.jsonl`` holds, to every logger (rank 0 only)."""

    def __init__(self, specs: Sequence[Any], run_dir: Path, recipe: Mapping[str, Any], is_main: bool) -> None:
        self.specs, self.run_dir, self.recipe, self.is_main = specs, run_dir, recipe, is_main
        self.loggers = LoggerSet()  # opened when the run starts: a run with nothing to train opens none

    @property
    def takes_images(self) -> bool:
        return self.loggers.takes_images

    def on_train_start(self, loop: Any, step: int) -> None:
        self.loggers = open_loggers(self.specs, self.run_dir, self.is_main)
        self.loggers.add_text("recipe", dump_recipe(self.recipe))

    def on_step(self, loop: Any, event: StepEvent) -> None:
        if event.record is not None:
            self.loggers.write(event.record)

    def on_overflow(self, loop: Any, event: OverflowEvent) -> None:
        self.loggers.write({"step": event.step, "event": "scaler_skip", "scale": event.scale})

    def on_skip(self, loop: Any, event: SkipEvent) -> None:
        record = {"step": event.step, "event": "nonfinite_skip", "loss": event.loss, "grad_norm": event.grad_norm}
        self.loggers.write({**record, "in_a_row": event.in_a_row})

    def on_validation(self, loop: Any, event: ValidationEvent) -> None:
        self.loggers.add_images(event.step, event.images)
        self.loggers.write({"step": event.step, "event": "validation", "tasks": event.tasks, "mean": event.mean})

    def on_train_end(self, loop: Any, step: int) -> None:
        self.loggers.close()


class ProgressBar(Callback):
    """A tqdm bar on stderr (rank 0, ``train.progress``), with the loss and rate of each log line."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def on_train_start(self, loop: Any, step: int) -> None:
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=loop.iterations, initial=step, disable=not self.enabled, dynamic_ncols=True,
                        mininterval=0.5 if tty else 10.0, file=sys.stderr, unit="it")  # fmt: skip

    def on_step(self, loop: Any, event: StepEvent) -> None:
        self.bar.update(1)
        if event.record is not None:
            self.bar.set_postfix(loss=f"{event.record['loss']:.4f}", lr=f"{event.record['lr']:.2e}", refresh=False)

    def on_train_end(self, loop: Any, step: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


Validate = Callable[..., dict[str, Any]]


class PeriodicValidation(Callback):
    """Every ``every`` steps and at the last: score the weights, print the table, tell the loop.

    ``validate(step, max_images=, keep_for_grid=)`` scores (the trainer's);
    ``report(step, result)`` prints the table on rank 0; ``images`` is the logger
    callback, asked whether any logger takes the before/after grid.
    """

    def __init__(
        self, every: int, max_images: int | None, grid_images: int, validate: Validate,
        report: Callable[[int, Mapping[str, Any]], None], images: LoggerCallback,
    ) -> None:  # fmt: skip
        self.every, self.max_images, self.grid_images = every, max_images, grid_images
        self.validate, self.report, self.images = validate, report, images

    def on_step(self, loop: Any, event: StepEvent) -> None:
        if not (self.every > 0 and (event.step % self.every == 0 or event.step == loop.iterations)):
            return
        keep = self.grid_images if self.images.takes_images else 0
        result = self.validate(event.step, max_images=self.max_images, keep_for_grid=keep)
        self.report(event.step, result)
        loop.validated(event.step, result)


class PeriodicCheckpoint(Callback):
    """A checkpoint every ``every`` steps, at the last step and when a validation found a new best."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_step(self, loop: Any, event: StepEvent) -> None:
        if event.step % self.every == 0 or event.step == loop.iterations or loop.best_at(event.step):
            loop.save(event.step)


# -- the builtin example of the callback kind --------------------------------------------
class EarlyStopping(Callback):
    """Stop the run when validation's ``monitor`` has not improved for ``patience`` validations.

    An improvement beats the best score so far by more than ``min_delta`` in the
    metric's direction (its ``higher_is_better``). The run stops cleanly after the
    validation that used up the patience: its checkpoint is written and ``train``
    returns. ``monitor`` (an ``eval.metrics`` name) defaults to ``train.best_metric``.
    """

    def __init__(self, monitor: str | None = None, patience: int = 3, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise RecipeError(f"early_stopping: patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise RecipeError(f"early_stopping: min_delta must be >= 0, got {min_delta}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best: float | None = None
        self.waited = 0  # validations since the last improvement

    def on_train_start(self, loop: Any, step: int) -> None:
        self.monitor = self.monitor or loop.best_metric
        if self.monitor not in loop.metric_directions:
            raise RecipeError(
                f"early_stopping: monitor {self.monitor!r} is not among eval.metrics "
                f"({', '.join(loop.metric_directions)})"
            )

    def on_validation(self, loop: Any, event: ValidationEvent) -> None:
        assert self.monitor is not None  # set by on_train_start
        score = event.mean.get(self.monitor)
        higher = loop.metric_directions[self.monitor]
        if score is not None and math.isfinite(score) and self.improves(score, higher):
            self.best, self.waited = score, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            loop.request_stop(
                f"early stopping: {self.monitor} did not improve by more than {self.min_delta:g} "
                f"for {self.waited} validation(s) (best {self.best})"
            )

    def improves(self, score: float, higher_is_better: bool) -> bool:
        if self.best is None:
            return True
        return score > self.best + self.min_delta if higher_is_better else score < self.best - self.min_delta


def build_callbacks(specs: Sequence[Any]) -> list[Any]:
    """``train.callbacks``, built through the ``callback`` registry (a plugin's too; build() checks each)."""
    return [build("callback", spec) for spec in specs]
