"""SIGTERM and SIGINT during training: finish the step, write a checkpoint, exit 143 / 130.

A scheduler's SIGTERM (or Ctrl-C) no longer loses the work since the last
checkpoint. While the loop runs, the first signal only sets a flag and puts the
default action back for both signals: the loop finishes its current step, every
rank agrees on the step to stop at (one tiny all-reduce per step under torchrun),
rank 0 writes an atomic checkpoint, and the run ends with :class:`TrainingInterrupted`
(exit status 128 + signal). A second signal meets the default action and ends the
process at once, without a checkpoint; the one before it still stands.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from restorekit.errors import TrainingInterrupted

__all__ = ["STOP_SIGNALS", "StopSignals", "TrainingInterrupted", "signal_name"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopSignals:
    """While entered (in the main thread), SIGTERM and SIGINT ask the loop to stop after its step."""

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

    def agreed(self, ctx: Any) -> int | None:
        """The signal any rank received, the same on every rank (None when none did)."""
        return self.agree(ctx)[0]

    def agree(self, ctx: Any, requested: bool = False) -> tuple[int | None, bool]:
        """(the signal any rank received, whether any rank ``requested`` a stop), the same on every rank.

        One tiny all-reduce per step under torchrun, so every rank stops at the same step
        even when only one received the signal or only one callback asked to stop.
        """
        if not ctx.distributed:
            return self.received, requested
        flags = torch.tensor([float(self.received or 0), float(requested)], device=ctx.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        signum, asked = flags.tolist()
        return int(signum) or None, asked > 0
