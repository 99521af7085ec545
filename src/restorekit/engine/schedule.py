"""Learning rate: linear warmup, then cosine decay to ``min_lr``.

The rate is a pure function of the step, so resuming needs nothing but the step
and the schedule can never drift between ranks or across restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    """``lr(step)`` for ``step`` in ``[0, total)``: warmup over ``warmup`` steps, then cosine.

    The warmup trains at ``base_lr * (s + 1) / warmup`` and so reaches ``base_lr``
    exactly at its last step ``warmup - 1``; the cosine starts from there (the peak
    is used once, not twice) and reaches ``min_lr`` exactly at the last training step
    ``total - 1``, so the whole budget decays and the end point is the one asked for.
    A warmup that would leave no step to decay (``warmup >= total``) is shortened to
    ``total - 1`` steps; the recipe check warns about it (``train.warmup_iters``).
    """

    base_lr: float
    min_lr: float
    warmup: int
    total: int

    @property
    def effective_warmup(self) -> int:
        """The warmup length used: at most ``total - 1``, so one step is left to reach ``min_lr``."""
        return max(0, min(self.warmup, self.total - 1))

    def __call__(self, step: int) -> float:
        warmup = self.effective_warmup
        if step < warmup - 1:
            # Step 0 trains at base_lr / warmup, never at 0 (a wasted step).
            return self.base_lr * (step + 1) / warmup
        peak = max(warmup - 1, 0)  # the step at base_lr, where the cosine starts
        last = self.total - 1  # the step at min_lr
        if step <= peak or last <= peak:
            return self.base_lr
        if step >= last:
            return self.min_lr
        progress = (step - peak) / (last - peak)
        rate = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
        return min(self.base_lr, max(self.min_lr, rate))  # no rounding past either end

    def state_dict(self) -> dict[str, float | int]:
        """What a checkpoint records (for reading; the rate is recomputed from the step)."""
        return {"base_lr": self.base_lr, "min_lr": self.min_lr, "warmup": self.warmup, "total": self.total}
