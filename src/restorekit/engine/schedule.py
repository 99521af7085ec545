"""Learning rate: linear warmup, then cosine decay to ``min_lr``.

The rate is a pure function of the step, so resuming needs nothing but the step
and the schedule can never drift between ranks or across restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    """``lr(step)`` for ``step`` in ``[0, total)``: warmup over ``warmup`` steps, then cosine."""

    base_lr: float
    min_lr: float
    warmup: int
    total: int

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            # Step 0 trains at base_lr / warmup, never at 0 (a wasted step).
            return self.base_lr * (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict[str, float | int]:
        """What a checkpoint records (for reading; the rate is recomputed from the step)."""
        return {"base_lr": self.base_lr, "min_lr": self.min_lr, "warmup": self.warmup, "total": self.total}
