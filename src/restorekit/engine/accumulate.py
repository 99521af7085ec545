"""Gradient accumulation (``train.accumulate: K``) and the step's results kept on the device.

``train.batch_size`` is the **global** batch of one optimizer step. With N processes
and ``accumulate: K`` each rank draws its ``batch_size / N`` samples of the step from
the stream (the same samples as without accumulation) and runs them as K
micro-batches of ``batch_size / (N * K)``: each micro-batch's loss is divided by K, so
the summed gradients are those of the mean over the whole global batch and the run
follows the K = 1 trajectory up to float rounding. Under DDP the gradient all-reduce
runs once per optimizer step: the first K - 1 micro-steps run under ``no_sync()``.

Exact for losses that are means over the batch (L1, DPC); a batch statistic (MSF's
load balance over the batch's gate weights) is taken per micro-batch instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from restorekit.errors import RecipeError


def micro_batch_size(global_batch: int, world_size: int, accumulate: int) -> int:
    """Each rank's micro-batch; the global batch must split evenly over ranks and micro-steps."""
    parts = world_size * accumulate
    if global_batch % parts:
        raise RecipeError(
            f"train.batch_size ({global_batch}) is the global batch of one optimizer step and must be divisible "
            f"by processes x train.accumulate ({world_size} x {accumulate} = {parts})"
        )
    return global_batch // parts


def micro_batches(batch: Mapping[str, Any], count: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(lq, gt)`` of each of ``count`` equal slices of a rank's batch, in order (views, no copy)."""
    lq, gt = batch["lq"], batch["gt"]
    size = lq.shape[0] // count
    for index in range(count):
        rows = slice(index * size, (index + 1) * size)
        yield lq[rows], gt[rows]


def gradient_sync(ddp: nn.Module | None, last: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync()`` on every micro-step but the last (forward and backward inside it)."""
    if ddp is None or last:
        return contextlib.nullcontext()
    return ddp.no_sync()  # type: ignore[operator]


@dataclass
class StepResult:
    """One optimizer step. Only ``skipped`` and ``overflow`` were read to the host (the
    guard's single read per step); the numbers stay on the device until a log step."""

    loss: Tensor  # the global batch's mean loss (averaged over ranks)
    grad_norm: Tensor  # before clipping
    terms: dict[str, Tensor]  # this rank's weighted loss terms, averaged over its micro-batches
    skipped: bool = False  # the NaN guard skipped the step (no optimizer step, no EMA update)
    overflow: bool = False  # fp16: a scaler skip (the scale was lowered), not a divergence
    votes: list[float] = field(default_factory=list)  # the step's votes (TrainStep.votes), summed over ranks


@dataclass
class LossTotals:
    """Sums over the micro-steps of one step, on the device."""

    loss: Tensor | None = None
    terms: dict[str, Tensor] = field(default_factory=dict)

    def add(self, loss: Tensor, terms: Mapping[str, Tensor], weight: float) -> None:
        """Add one micro-step's (already weighted) loss and its terms times ``weight``."""
        loss = loss.detach()
        self.loss = loss if self.loss is None else self.loss + loss
        for name, value in terms.items():
            value = value.detach().float() * weight
            self.terms[name] = value if name not in self.terms else self.terms[name] + value


class WindowMean:
    """The mean loss of the good steps since the last log line, summed on the device."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def add(self, loss: Tensor) -> None:
        self.total = loss if self.total is None else self.total + loss
        self.count += 1

    def value(self) -> Tensor | None:
        return None if self.total is None else self.total / self.count


def read_numbers(values: Mapping[str, Tensor | None]) -> dict[str, float | None]:
    """Device scalars to floats in one transfer (a log step's only host read)."""
    present = {k: v for k, v in values.items() if v is not None}
    if not present:
        return dict.fromkeys(values)
    numbers = torch.stack([v.detach().float().reshape(()) for v in present.values()]).tolist()
    read = dict(zip(present, numbers))
    return {k: read.get(k) for k in values}
