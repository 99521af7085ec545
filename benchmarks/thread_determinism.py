"""Does the CPU thread count change the demo's arithmetic? One training step's gradients, 1 vs 2 threads.

The demo (``recipes/demo/dino_ir_tiny.yaml``) is bit for bit repeatable on one
machine with one thread count. This builds its model (seed 0, the D-R output
projections moved off zero so every part gets a gradient), runs one loss forward
and backward on a fixed batch with ``torch.set_num_threads(1)`` twice and with 2
threads once, and reports whether the loss and the gradients are bitwise equal.
Differences in the last bits, compounded over 2000 optimiser steps, give a
different trained model: the demo's final PSNR depends on the thread count and on
the CPU's kernels (its instruction set), not on the seed alone.

    python benchmarks/thread_determinism.py      # seconds on the CPU
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bench  # noqa: E402


def loss_and_grads(recipe: dict, threads: int) -> tuple[float, dict]:
    import torch

    from restorekit import build, build_model
    from restorekit.engine.step import forward_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(recipe["model"])
    with torch.no_grad():
        for adapter in model.adapters.values():
            for module in adapter.zero_initialised():
                module.weight.normal_(0, 0.05)
    loss = build("loss", recipe["loss"])
    loss.bind(model)
    gen = torch.Generator().manual_seed(1)
    lq, gt = torch.rand(4, 3, 48, 48, generator=gen), torch.rand(4, 3, 48, 48, generator=gen)
    result = forward_loss(model, model, loss, lq, gt)
    result.total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return result.total.item(), grads


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="demo/dino_ir_tiny")
    parser.add_argument("--out", help="results folder (default benchmarks/out)")
    args = parser.parse_args(argv)
    import warnings

    import torch

    from restorekit import load_recipe

    recipe = load_recipe(args.recipe)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*randomly initialised.*")
        loss_a, grads_a = loss_and_grads(recipe, 1)
        loss_b, grads_b = loss_and_grads(recipe, 1)
        loss_2, grads_2 = loss_and_grads(recipe, 2)
    diff = {n: (grads_a[n] - grads_2[n]).abs().max().item() for n in grads_a}
    result = {
        "recipe": args.recipe, "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "same_threads_loss_equal": loss_a == loss_b,
        "same_threads_grads_equal": all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a),
        "threads_1_vs_2_loss_equal": loss_a == loss_2,
        "threads_1_vs_2_grads_equal": all(torch.equal(grads_a[n], grads_2[n]) for n in grads_a),
        "parameters": len(diff), "parameters_whose_gradient_differs": sum(v > 0 for v in diff.values()),
        "max_abs_gradient_difference": max(diff.values()),
    }  # fmt: skip
    folder = bench.out_dir(args.out)
    bench.write_json(folder / "thread_determinism.json", result)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"wrote {folder / 'thread_determinism.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
