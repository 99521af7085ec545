"""Builtin learning-rate schedules (the ``schedule`` kind): ``factory(lr, iterations, **knobs)``.

Each schedule is a pure function of the step, so resuming needs nothing but the
step and the rate can never drift between ranks or across restarts. A recipe
picks one with ``train.schedule: {type: warmup_cosine, warmup_iters: 1000}``.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from restorekit.errors import BuildError


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


def _check(name: str, lr: float, iterations: int, warmup_iters: int) -> None:
    if iterations < 1:
        raise BuildError(f"{name}: iterations must be >= 1, got {iterations}")
    if warmup_iters < 0:
        raise BuildError(f"{name}: warmup_iters must be >= 0, got {warmup_iters}")
    if lr <= 0:
        raise BuildError(f"{name}: lr must be > 0, got {lr}")


def warmup_cosine(lr: float, iterations: int, warmup_iters: int = 0, min_lr: float = 1e-6) -> WarmupCosine:
    """Linear warmup, then cosine decay to ``min_lr`` at the last step (restorekit's default)."""
    _check("warmup_cosine", lr, iterations, warmup_iters)
    if not 0 <= min_lr <= lr:
        raise BuildError(f"warmup_cosine: min_lr must lie in [0, lr = {lr}], got {min_lr}")
    if warmup_iters >= iterations:
        # Not an error: shrinking train.iterations for a quick run should not also
        # require shrinking the warmup. The schedule keeps one step for the decay.
        warnings.warn(
            f"warmup_cosine: warmup_iters ({warmup_iters}) >= train.iterations ({iterations}); the warmup is "
            f"shortened to {iterations - 1} step(s) so the rate can decay to min_lr at the last step",
            stacklevel=2,
        )
    return WarmupCosine(lr, min_lr, warmup_iters, iterations)


@dataclass(frozen=True)
class Constant:
    """``base_lr`` after a linear warmup of ``warmup`` steps (the warmup as :class:`WarmupCosine`'s)."""

    base_lr: float
    warmup: int = 0

    def __call__(self, step: int) -> float:
        if step < self.warmup - 1:
            return self.base_lr * (step + 1) / self.warmup
        return self.base_lr

    def state_dict(self) -> dict[str, float | int]:
        return {"base_lr": self.base_lr, "warmup": self.warmup}


def constant(lr: float, iterations: int, warmup_iters: int = 0) -> Constant:
    """A constant rate, after an optional linear warmup."""
    _check("constant", lr, iterations, warmup_iters)
    return Constant(lr, min(warmup_iters, iterations))


@dataclass(frozen=True)
class MultiStep:
    """``base_lr * gamma ** (milestones passed)`` after a linear warmup."""

    base_lr: float
    milestones: tuple[int, ...]
    gamma: float
    warmup: int = 0

    def __call__(self, step: int) -> float:
        if step < self.warmup - 1:
            return self.base_lr * (step + 1) / self.warmup
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)

    def state_dict(self) -> dict[str, object]:
        return {"base_lr": self.base_lr, "milestones": list(self.milestones), "gamma": self.gamma,
                "warmup": self.warmup}  # fmt: skip


def multistep(
    lr: float, iterations: int, milestones: Sequence[int] = (), gamma: float = 0.5, warmup_iters: int = 0
) -> MultiStep:
    """Step decay: the rate is multiplied by ``gamma`` at each milestone step (Restormer, BasicSR)."""
    _check("multistep", lr, iterations, warmup_iters)
    steps = [int(m) for m in milestones]
    if steps != sorted(set(steps)) or any(m < 1 for m in steps):
        raise BuildError(f"multistep: milestones must be increasing positive steps, got {list(milestones)}")
    if not 0 < gamma <= 1:
        raise BuildError(f"multistep: gamma must lie in (0, 1], got {gamma}")
    return MultiStep(lr, tuple(steps), float(gamma), min(warmup_iters, iterations))
