"""How long a run takes, from the dry run's FLOPs and an assumed GPU throughput.

One training step has been measured on a GPU (docs/performance.md), at another batch
than the recipes', so the time is the run's FLOPs (``restorekit train --dry-run``:
forward, loss and backward of every step) divided by an **assumed** sustained
throughput per GPU derived from that step, with ideal scaling across GPUs. Both are
assumptions, stated wherever a time is printed.
"""

from __future__ import annotations

import math

# The one training step measured on a GPU so far (docs/performance.md, GPU section): dino_ir
# at batch 8 of 128 px, bf16 autocast, eager, on one H200: 185 ms. Over the dry run's FLOPs
# of that step that is about 15 TFLOP/s (scripts/gpu_hours.py derives it), assumed here for
# every recipe and batch: restoration networks (depthwise convolutions, layer norms, channel
# attention) run far below a GPU's matmul peak.
MEASURED_STEP = {"recipe": "dino_ir", "batch_size": 8, "seconds": 0.185, "device": "one H200"}
ASSUMED_TFLOPS_PER_GPU = 15.0
ASSUMPTION = (
    f"assumed {ASSUMED_TFLOPS_PER_GPU:.0f} TFLOP/s sustained per GPU, from the one measured H200 step "
    "(dino_ir, batch 8 of 128 px, bf16, eager: 185 ms; docs/performance.md), for every recipe and batch, "
    "with ideal scaling across GPUs; an H200 step time at the recipes' own batch is still to be measured"
)
MIN_ITERATIONS = 1000
DEFAULT_EPOCHS = 200


def run_flops(flops_per_step_all_gpus: float, iterations: int) -> float:
    """FLOPs of the whole run: one optimizer step (all GPUs) times the steps."""
    return float(flops_per_step_all_gpus) * iterations


def wall_hours(total_flops: float, gpus: int, tflops_per_gpu: float = ASSUMED_TFLOPS_PER_GPU) -> float:
    """Wall-clock hours on ``gpus`` GPUs at the assumed throughput (GPU hours = this x gpus)."""
    return total_flops / (gpus * tflops_per_gpu * 1e12) / 3600.0


def size_iterations(train_pairs: int, batch_size: int, epochs: int = DEFAULT_EPOCHS, at_most: int | None = None) -> int:
    """The sizing rule of ``restorekit init --pairs``.

    ``ceil(epochs x train_pairs / batch_size)`` optimizer steps (one random crop of one
    pair per sample, so an epoch is ``train_pairs`` samples), at least 1,000, and at most
    the base recipe's own ``iterations`` (``at_most``).
    """
    steps = max(MIN_ITERATIONS, math.ceil(epochs * train_pairs / batch_size))
    return min(steps, at_most) if at_most else steps


def format_flops(flops: float) -> str:
    """``3.2 EFLOP``, ``410 PFLOP``: the dry run's units."""
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def format_hours(hours: float) -> str:
    """``14.2 h``, ``35 min``, ``< 1 min``."""
    if hours >= 1:
        return f"{hours:,.3g} h" if hours < 1000 else f"{hours:,.0f} h"
    minutes = hours * 60
    return f"{minutes:.2g} min" if minutes >= 1 else "< 1 min"
