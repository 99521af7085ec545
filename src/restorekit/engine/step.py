"""One training step as a public object: the trainer and the benchmarks run the same code.

:func:`forward_loss` is the loss of one batch (forward, the recipe's loss, every
auxiliary loss the model reports). :class:`TrainStep` is one optimizer step around it:
the learning rate of the step, ``accumulate`` micro-batches (forward under autocast,
the loss scaled for fp16 and backward, DDP's all-reduce on the last micro-batch only),
unscaling, gradient clipping, the NaN guard, the optimizer step and the EMA update.

The step's numbers stay on the device. The NaN guard's flags are its one host read:
whether the optimizer steps depends on them. A step whose loss or gradient norm is not
finite on any rank is skipped (no optimizer step, no EMA update, gradients dropped).
Under torchrun those flags are summed over ranks in the step's one all-reduce, and the
loop's stop votes (:attr:`TrainStep.votes`) ride along in the same tensor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from restorekit.contracts import GuidedModel, LossTerms, Schedule, as_terms, collect_aux_losses, sum_terms
from restorekit.engine import distributed as dist_utils
from restorekit.engine.accumulate import LossTotals, StepResult, gradient_sync, micro_batches
from restorekit.engine.distributed import DistContext
from restorekit.engine.ema import EMA
from restorekit.engine.grad_layout import keep_grad_layout
from restorekit.engine.infer import autocast_context
from restorekit.engine.scaler import LossScaling
from restorekit.errors import RecipeError

logger = logging.getLogger(__name__)

ONE_PROCESS = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@dataclass
class StepLoss:
    """The total a backward starts from, and its named terms (weighted; they add up to it)."""

    total: Tensor
    terms: LossTerms


def forward_loss(
    model: nn.Module, forward: nn.Module, loss_fn: nn.Module, lq: Tensor, gt: Tensor, loss_name: str = "loss"
) -> StepLoss:
    """``forward`` (the model, or its DDP / compiled wrapper) on ``lq``, then the loss.

    A loss that returns one scalar has it logged as ``loss_name`` (the recipe's loss type).
    A :class:`~restorekit.contracts.GuidedModel` hands its loss a ``ModelAux``;
    auxiliary losses reported by any module of ``model`` are added whatever the
    recipe's loss is, so a load-balance or routing loss is never dropped.
    """
    if isinstance(model, GuidedModel):
        restored, aux = forward(lq, return_aux=True)
    else:
        restored, aux = forward(lq), None
    terms = as_terms(loss_fn(restored, gt, lq=lq, aux=aux), loss_name)
    terms.update(collect_aux_losses(model))
    return StepLoss(sum_terms(terms, restored), terms)


@dataclass
class StepSettings:
    """How a step runs; the recipe's ``train:`` keys and the run's precision give them."""

    accumulate: int = 1  # micro-batches per optimizer step
    grad_clip: float | None = None  # max gradient norm; None or 0: no clipping (the norm is still taken)
    autocast: bool | str = False  # autocast_context's switch: False, "bf16" or "fp16"
    memory_format: torch.memory_format = torch.contiguous_format
    batch_size: int | None = None  # each rank's batch; another size is a RecipeError (None: any)


class TrainStep:
    """One optimizer step of ``model`` on a batch ``{"lq", "gt"}``: ``step(batch, index) -> StepResult``.

    ``forward`` is what runs the batch (the model, its DDP wrapper or a compiled one);
    ``ddp`` the DDP wrapper whose ``no_sync()`` spares the all-reduce of accumulating
    micro-steps. ``ema`` and ``scaling`` are optional: without them no average is kept
    and the loss is not scaled. ``votes`` (set by the loop under torchrun) gives numbers
    summed over ranks in the step's all-reduce; the result carries the sums.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        *,
        params: list[nn.Parameter] | None = None,
        loss_name: str = "loss",
        settings: StepSettings | None = None,
        ema: EMA | None = None,
        scaling: LossScaling | None = None,
        ctx: DistContext = ONE_PROCESS,
        forward: nn.Module | None = None,
        ddp: nn.Module | None = None,
    ) -> None:
        self.model, self.loss_fn, self.loss_name = model, loss_fn, loss_name
        self.optimizer, self.schedule = optimizer, schedule
        self.params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        self.settings = settings or StepSettings()
        self.ema = ema
        self.scaling = scaling or LossScaling(False, ctx.device)
        self.ctx = ctx
        self.forward_model = forward if forward is not None else model
        self.ddp = ddp
        self.votes: Callable[[], list[float]] | None = None

    def __call__(self, batch: Mapping[str, Any], step: int) -> StepResult:
        """One optimizer step over ``settings.accumulate`` micro-batches at the rate ``schedule(step)``."""
        settings, device, count = self.settings, self.ctx.device, self.settings.accumulate
        if settings.batch_size is not None and batch["lq"].shape[0] != settings.batch_size:
            raise RecipeError(
                f"the data stream gave a batch of {batch['lq'].shape[0]} on rank {self.ctx.rank}; expected "
                f"train.batch_size / world size = {settings.batch_size}"
            )
        lr = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        totals = LossTotals()
        for index, (lq, gt) in enumerate(micro_batches(batch, count)):
            lq = lq.to(device, non_blocking=True).contiguous(memory_format=settings.memory_format)
            gt = gt.to(device, non_blocking=True).contiguous(memory_format=settings.memory_format)
            with gradient_sync(self.ddp, last=index == count - 1):
                with autocast_context(device, settings.autocast):
                    result = forward_loss(self.model, self.forward_model, self.loss_fn, lq, gt, self.loss_name)
                loss = result.total.float() / count
                self.scaling.scale(loss).backward()
            totals.add(loss, result.terms, 1.0 / count)
        self.scaling.unscale(self.optimizer)
        max_norm = settings.grad_clip if settings.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        assert totals.loss is not None  # accumulate >= 1
        flags = torch.stack([totals.loss, (~torch.isfinite(totals.loss)).float(), (~torch.isfinite(grad_norm)).float()])
        if self.votes is not None:  # the loop's stop votes share the all-reduce: one per step
            flags = torch.cat([flags, torch.tensor(self.votes(), dtype=flags.dtype, device=device)])
        dist_utils.all_reduce_sum(self.ctx, flags)
        values = flags[1:].tolist()  # the step's one host read
        loss_bad, grads_bad, votes = values[0] > 0, values[1] > 0, values[2:]
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
            votes=votes,
        )


def wrap_for_training(
    model: nn.Module, ctx: DistContext, *, find_unused: bool, compile: bool
) -> tuple[nn.Module, nn.Module | None]:
    """``(forward, ddp)``: the model in DistributedDataParallel under a process group, then compiled if asked."""
    forward: nn.Module = model
    ddp: nn.Module | None = None
    if ctx.distributed:
        keep_grad_layout(model)  # before DDP lays its buckets out after the parameters
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        forward = ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)
        if ctx.is_main:
            logger.info(
                "DistributedDataParallel over %d process(es), backend %s",
                ctx.world_size,
                torch.distributed.get_backend(),
            )
    if compile:
        forward = torch.compile(forward)  # type: ignore[assignment]
    return forward, ddp
