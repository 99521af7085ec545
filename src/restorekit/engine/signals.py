"""Stop signals during training: finish the step, write a checkpoint, exit 128 + the signal.

SIGTERM (a scheduler's pre-emption, torchrun stopping its workers), SIGINT (Ctrl-C)
and SIGUSR1 / SIGUSR2 (the warnings SLURM and submitit send before a time limit) no
longer lose the work since the last checkpoint. While the loop runs, the first signal
only sets a flag and puts the default action back for all of them: the loop finishes
its current step, every rank agrees on the step to stop at, rank 0 writes an atomic
checkpoint, and the run ends with :class:`TrainingInterrupted` (exit status 128 +
signal). A second signal meets the default action and ends the process at once,
without a checkpoint; the one before it still stands.

Under torchrun the agreement costs no collective of its own: :meth:`StopSignals.votes`
rides on the step's one all-reduce (the NaN guard's flags, summed over ranks), and
:func:`agreed_signal` reads the result. A signal that arrives after that all-reduce is
agreed at the next step, on every rank alike.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from restorekit.errors import TrainingInterrupted

__all__ = ["STOP_SIGNALS", "StopSignals", "TrainingInterrupted", "signal_name"]

logger = logging.getLogger(__name__)

# In order of precedence when ranks received different ones.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
# What a scheduler sends before a time limit or a pre-emption: the job is worth requeueing.
# SIGINT is a person's Ctrl-C: the run stops and stays stopped.
PREEMPTION_SIGNALS = frozenset({signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2})


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def requeue_wanted(signum: int) -> bool:
    """Whether a run stopped (its checkpoint written) by ``signum`` should be requeued to go on."""
    return signum in PREEMPTION_SIGNALS


def agreed_signal(votes: Sequence[float]) -> int | None:
    """The stop signal ``votes`` (one count per :data:`STOP_SIGNALS` entry, summed over ranks) name, if any."""
    for sig, count in zip(STOP_SIGNALS, votes):
        if count > 0:
            return int(sig)
    return None


class StopSignals:
    """While entered (in the main thread), the :data:`STOP_SIGNALS` ask the loop to stop after its step."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # elsewhere Python cannot install handlers
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        for sig in STOP_SIGNALS:  # a second signal takes the default action: at once, no checkpoint
            signal.signal(sig, signal.SIG_DFL)
        logger.warning(
            "%s received: finishing this step and writing a checkpoint; send it again to stop at once (without one)",
            signal_name(signum),
        )

    def votes(self) -> list[float]:
        """This rank's vote: 1 for the signal it received, 0 for the others (summed over ranks)."""
        return [float(self.received == sig) for sig in STOP_SIGNALS]

    def agreed(self, ctx: Any) -> int | None:
        """The signal any rank received, the same on every rank (None when none did)."""
        return self.agree(ctx)[0]

    def agree(self, ctx: Any, requested: bool = False) -> tuple[int | None, bool]:
        """(the signal any rank received, whether any rank ``requested`` a stop), the same on every rank.

        An all-reduce of its own under torchrun: the loop calls it only when a recipe's
        callback may ask to stop on one rank alone (the signals ride on the step's all-reduce).
        """
        if not ctx.distributed:
            return self.received, requested
        flags = torch.tensor([*self.votes(), float(requested)], device=ctx.device)
        dist.all_reduce(flags, op=dist.ReduceOp.SUM)
        *votes, asked = flags.tolist()
        return agreed_signal(votes), asked > 0
