"""``restorekit train RECIPE --dry-run``: what a run would cost, before it starts.

The model and its loss are built on the **meta** device (shapes, no memory, no
weights' values), so a paper-size model is inspected on any machine; no GPU is
touched and no image is read. Reported:

* parameters per part of the model, trainable and frozen;
* FLOPs of one micro-step (forward, loss with its own backbone passes, backward)
  counted by :func:`restorekit.engine.flops.count_flops`, then per optimizer step and
  for the whole run;
* an estimate of the peak memory per GPU at the recipe's micro-batch (see
  :func:`memory_estimate`);
* the data section: images and share of samples per training task, images per
  validation task (datasets list their files; none is decoded).
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from restorekit.data.build import check_data_config, inspect_data
from restorekit.engine.accumulate import micro_batch_size
from restorekit.engine.config import TrainConfig, train_config
from restorekit.engine.flops import count_flops
from restorekit.engine.parts import build_model_and_loss, build_optimizer
from restorekit.engine.step import forward_loss
from restorekit.errors import RecipeError
from restorekit.frozen import iter_trainable, trainable_state_dict
from restorekit.params import count_params, param_table, part_rows


@dataclass
class MemoryEstimate:
    """Bytes per GPU at the peak of a training step (see :func:`memory_estimate`)."""

    weights: int
    ema: int
    optimizer: int
    gradients: int
    ddp_buckets: int
    activations: int  # kept for backward, every tensor in float32
    activations_16bit: int | None  # every tensor in 16 bits (bf16/fp16 autocast lies between)

    def total(self, activations: int) -> int:
        return self.weights + self.ema + self.optimizer + self.gradients + self.ddp_buckets + activations


@dataclass
class DryRunReport:
    """What ``--dry-run`` prints (see the module docstring)."""

    source: str
    cfg: TrainConfig
    world_size: int
    micro_batch: int
    patch_size: int
    precision: str
    parts: list[tuple[str, int, int]]  # (part, trainable, frozen), restorekit.params.part_rows
    params: tuple[int, int]  # (trainable, frozen) in all
    flops_micro: int
    memory: MemoryEstimate
    data: dict[str, Any] = field(default_factory=dict)
    tasks: list[Any] = field(default_factory=list)

    @property
    def failed_tasks(self) -> list[Any]:
        return [t for t in self.tasks if t.error is not None]


def on_meta(build: Callable[[], Any]) -> Any:
    """``build()`` with every tensor it creates on the meta device (random-init notes hushed)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.filterwarnings("ignore", message=".*randomly initialised.*")
        return build()


def saved_for_backward(model: nn.Module, run: Callable[[], Any]) -> tuple[Any, int]:
    """``run()``'s result and the bytes autograd keeps for backward meanwhile (each storage
    once; the model's own parameters and buffers are counted as weights instead)."""
    own = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in own:
            kept[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    return result, sum(kept.values())


def optimizer_state_bytes(cfg: TrainConfig, params: list[nn.Parameter]) -> int:
    """The recipe's optimizer's state after one step, built and stepped on meta parameters."""
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer = build_optimizer(cfg, params)
    optimizer.step()
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    for p in params:
        p.grad = None
    return sum(v.nbytes for v in state if v.device.type == "meta")


def memory_estimate(
    model: nn.Module, loss_fn: Any, cfg: TrainConfig, shape: tuple[int, ...], world_size: int, half: bool
) -> tuple[MemoryEstimate, int]:
    """(memory estimate, FLOPs of one micro-step) of a meta-device model at micro-batch ``shape``.

    Peak of a step ~= weights (all, as stored) + EMA of the trainable state + optimizer
    state + gradients (+ DDP's gradient buckets, a second copy, with several processes)
    + the activations autograd keeps for backward. An upper bound for the steady
    state: backward frees activations while gradients appear. Not counted: the CUDA
    context and cuDNN/cuBLAS workspaces (a few hundred MiB, outside
    ``torch.cuda.max_memory_allocated``), the largest temporary of one operation and
    allocator fragmentation. Under bf16/fp16 autocast the saved tensors are partly
    16-bit: the activations then lie between the float32 and the all-16-bit figures.
    ``half`` also traces the all-16-bit case (it leaves ``model`` in bfloat16).
    """
    model.train()
    lq, gt = torch.rand(shape, device="meta"), torch.rand(shape, device="meta")
    trainable = list(iter_trainable(model))
    traced: list[int] = []

    def step() -> None:
        total, kept = saved_for_backward(model, lambda: forward_loss(model, model, loss_fn, lq, gt).total)
        traced.append(kept)
        total.backward()

    flops = count_flops(step)
    grads = sum(p.nbytes for p in trainable)
    estimate = MemoryEstimate(
        weights=sum(t.nbytes for t in [*model.parameters(), *model.buffers()]),
        ema=sum(t.nbytes for t in trainable_state_dict(model).values()) if cfg.ema_decay is not None else 0,
        optimizer=optimizer_state_bytes(cfg, trainable),
        gradients=grads,
        ddp_buckets=grads if world_size > 1 else 0,
        activations=traced[0],
        activations_16bit=None,
    )
    if half:
        estimate.activations_16bit = half_activations(model, loss_fn, shape)
    return estimate, flops


def half_activations(model: nn.Module, loss_fn: Any, shape: tuple[int, ...]) -> int:
    """Bytes kept for backward with the model, loss and inputs all in bfloat16 (converts them)."""
    model.to(torch.bfloat16)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(torch.bfloat16)
    lq = torch.rand(shape, device="meta", dtype=torch.bfloat16)
    return saved_for_backward(model, lambda: forward_loss(model, model, loss_fn, lq, lq.clone()).total)[1]


def dry_run(
    recipe: Mapping[str, Any], source: str = "recipe", world_size: int = 1, origins: Mapping[str, Any] | None = None
) -> DryRunReport:
    """Inspect ``recipe`` (resolved) as ``restorekit train --dry-run`` does: see the module doc.

    ``origins`` (data task -> base recipe it was inherited from) is named when a task's folder is missing.
    """
    cfg = train_config(recipe, source)
    if not recipe.get("model"):
        raise RecipeError(f"{source}: the recipe has no 'model' section")
    micro = micro_batch_size(cfg.batch_size, world_size, cfg.accumulate)
    data_cfg = check_data_config(recipe.get("data"))
    precision = {"auto": "bf16", "off": "fp32"}.get(cfg.amp, cfg.amp)  # as it would train on CUDA
    model, loss_fn = on_meta(lambda: build_model_and_loss(recipe["model"], recipe.get("loss"), device="meta"))
    parts, params = part_rows(model), count_params(model)
    shape = (micro, 3, data_cfg["patch_size"], data_cfg["patch_size"])
    memory, flops = memory_estimate(model, loss_fn, cfg, shape, world_size, half=precision != "fp32")
    _, tasks = inspect_data(recipe.get("data"), origins)
    return DryRunReport(
        source, cfg, world_size, micro, data_cfg["patch_size"], precision, parts, params, flops, memory, data_cfg, tasks
    )


# -- the report -------------------------------------------------------------------------------
def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def _flops(n: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} FLOP"


def render(report: DryRunReport) -> str:
    """The dry run as text: batch, parameters per part, FLOPs, memory, data."""
    return (
        "\n\n".join(
            [
                _render_batch(report),
                _render_parts(report),
                _render_flops(report),
                _render_memory(report),
                _render_data(report),
            ]
        )
        + "\n"
    )


def _render_batch(r: DryRunReport) -> str:
    cfg = r.cfg
    return (
        f"dry run of {r.source}: the model on the meta device; no GPU touched, no image read\n"
        f"global batch {cfg.batch_size} = {r.world_size} process(es) x accumulate {cfg.accumulate} x "
        f"micro-batch {r.micro_batch}, patches of {r.patch_size} px; {cfg.iterations:,} optimizer steps; "
        f"precision {r.precision} (on CUDA)"
    )


def _render_parts(r: DryRunReport) -> str:
    return "parameters per part:\n" + textwrap.indent(param_table(r.parts, r.params), "  ")


def _render_flops(r: DryRunReport) -> str:
    per_gpu = r.flops_micro * r.cfg.accumulate
    rows = [
        (f"per micro-step ({r.micro_batch} x {r.patch_size} px)", r.flops_micro),
        ("per optimizer step, per GPU", per_gpu),
        ("per optimizer step, all GPUs", per_gpu * r.world_size),
        (f"whole run ({r.cfg.iterations:,} steps)", per_gpu * r.world_size * r.cfg.iterations),
    ]
    lines = ["FLOPs (matmuls, convolutions, attention; forward, loss and backward; 2 per multiply-add):"]
    return "\n".join(lines + [f"  {name:34s} {_flops(value):>11s}" for name, value in rows])


def _render_memory(r: DryRunReport) -> str:
    m = r.memory
    rows = [
        ("weights (trainable and frozen)", m.weights),
        ("EMA of the trainable state", m.ema),
        (f"optimizer state ({r.cfg.optimizer.get('type')})", m.optimizer),
        ("gradients", m.gradients),
    ]
    if m.ddp_buckets:
        rows.append(("DDP gradient buckets", m.ddp_buckets))
    lines = [f"estimated peak memory per GPU at micro-batch {r.micro_batch} (MiB):"]
    lines += [f"  {name:34s} {_mib(value):>10s}" for name, value in rows]
    if m.activations_16bit is None:
        lines.append(f"  {'activations kept for backward':34s} {_mib(m.activations):>10s}")
        lines.append(f"  {'total':34s} {_mib(m.total(m.activations)):>10s}")
    else:
        lines.append(
            f"  {'activations kept for backward':34s} {_mib(m.activations_16bit):>10s} - "
            f"{_mib(m.activations)} (all 16-bit - all float32; {r.precision} autocast lies between)"
        )
        lines.append(f"  {'total':34s} {_mib(m.total(m.activations_16bit)):>10s} - {_mib(m.total(m.activations))}")
    lines.append(
        "  (counted on the meta device; not counted: the CUDA context, cuDNN/cuBLAS workspaces, "
        "one operation's temporaries, allocator fragmentation; docs/training.md)"
    )
    return "\n".join(lines)


def _render_data(r: DryRunReport) -> str:
    lines = [f"data: patch_size {r.patch_size}, num_workers {r.data['num_workers']} (datasets listed, no image read)"]
    for section in ("train", "val"):
        rows = [t for t in r.tasks if t.section == section]
        lines.append(f"  {section}:" + ("" if rows else " (no task)"))
        ok = [t for t in rows if t.error is None]
        total = sum(t.share for t in ok) if section == "train" else 0
        for task in rows:
            if task.error is not None:
                lines.append(f"    {task.name}: ERROR: {task.error}")
                continue
            line = f"    {task.name:16s} {len(task.dataset):7d} images"
            if section == "train":
                line += f"  {100 * task.share / total:5.1f}% of samples"
            lines.append(line)
    return "\n".join(lines)
