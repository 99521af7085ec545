"""Short training runs through the engine's loop, scored per task on held-out images:
the task-count experiment and the quality comparison on the photographs share them.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common  # noqa: F401  (makes restorekit importable from a checkout)

# The five tasks of the paper's Figure 1, as synthetic degradations of the photographs.
FIVE_TASKS: dict[str, Any] = {
    "noise": {"type": "noise", "sigma": 25},
    "rain": {"type": "rain", "density": [0.004, 0.012]},  # the demo's rain: the default is nearly clean
    "haze": {"type": "haze"},
    "blur": {"type": "motion_blur"},
    "low_light": {"type": "low_light"},
}


def add_run_arguments(parser: argparse.ArgumentParser, default_name: str, iterations_help: str) -> None:
    """The options every short-run benchmark shares (budget, device, output)."""
    parser.add_argument("--iterations", type=int, help=iterations_help)
    parser.add_argument("--batch-size", type=int, help="default 4 tiny, 8 full")
    parser.add_argument(
        "--patch-size", type=int, help="default 32 tiny (quality_samples: 48), 128 full (photographs only)"
    )
    parser.add_argument("--eval-size", type=int, help="long side of the test photographs (default 96 tiny, 256 full)")
    parser.add_argument("--lr", type=float, help="default 2e-3 tiny, 2e-4 full")
    parser.add_argument("--backbone-weights", help="weights file for DINO-IR's backbone (default: random init)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda (default: cpu with --tiny, else auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 with --tiny, else torch's)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders under OUT/<name>_runs")
    parser.add_argument("--out", help="results folder (default benchmarks/out)")
    parser.add_argument("--name", help=f"file stem of the results (default {default_name}[_tiny])")


def with_backbone_weights(model_spec: dict[str, Any], weights: str | None) -> tuple[dict[str, Any], bool]:
    """The spec with DINO-IR's backbone weights set (when given), and whether it stays random."""
    if model_spec.get("type") != "dino_ir":
        return model_spec, False
    backbone = dict(model_spec.get("backbone") or {"type": "dinov2"})
    if weights:
        return {**model_spec, "backbone": {**backbone, "weights": weights}}, False
    return model_spec, not backbone.get("weights")


def samples_data(tasks: Sequence[str], patch_size: int, eval_size: int | None, seed: int = 0) -> dict[str, Any]:
    """A data section on scikit-image's photographs: each task a synthetic degradation.

    Training draws patches from the 'train' photographs, every task with the same
    weight; evaluation uses the held-out 'test' photographs (long side ``eval_size``),
    degraded with fixed seeds, so every run scores the same images.
    """
    unknown = [t for t in tasks if t not in FIVE_TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; known: {', '.join(FIVE_TASKS)}")

    def dataset(task: str, split: str, max_size: int | None) -> dict[str, Any]:
        return {"type": "samples", "degradation": FIVE_TASKS[task], "split": split,
                "max_size": max_size, "seed": seed}  # fmt: skip

    return {
        "patch_size": patch_size,
        "augment": True,
        "num_workers": 0,
        "train": {t: {"dataset": dataset(t, "train", max(4 * patch_size, 256)), "weight": 1.0} for t in tasks},
        "val": {t: {"dataset": dataset(t, "test", eval_size)} for t in tasks},
    }


def task_of(entry_name: str) -> str:
    """The task a data entry belongs to: ``denoise_15`` -> ``denoise`` (a level suffix drops)."""
    import re

    return re.sub(r"_\d+$", "", str(entry_name))


def data_tasks(data_cfg: Mapping[str, Any]) -> list[str]:
    """The tasks of a data section's ``train`` entries, in order (noise levels grouped)."""
    return list(dict.fromkeys(task_of(name) for name in (data_cfg.get("train") or {})))


def subset_data(data_cfg: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, Any]:
    """A user's data section cut down to ``tasks``: the train and val entries that belong
    to them (``denoise_15/25/50`` all belong to ``denoise``)."""
    train = {k: v for k, v in (data_cfg.get("train") or {}).items() if not str(k).startswith("_")}
    val = {k: v for k, v in (data_cfg.get("val") or {}).items() if not str(k).startswith("_")}
    known = data_tasks({"train": train})
    missing = [t for t in tasks if t not in known]
    if missing:
        raise SystemExit(f"data.train has no task(s) {missing}; its tasks are {', '.join(known) or 'none'}")
    chosen_val = {name: entry for name, entry in val.items() if task_of(name) in tasks}
    if not chosen_val:
        raise SystemExit(f"data.val has no entry for the tasks {list(tasks)}; it has {', '.join(val) or 'none'}")
    chosen_train = {name: entry for name, entry in train.items() if task_of(name) in tasks}
    return {**dict(data_cfg), "train": chosen_train, "val": chosen_val}


@dataclass(frozen=True)
class Budget:
    """What every run of a comparison shares: the same budget, seed and device."""

    iterations: int
    batch_size: int
    lr: float
    device: str = "auto"
    seed: int = 0
    ema: bool = True
    threads: int | None = None


def train_and_evaluate(
    name: str,
    model_spec: Mapping[str, Any],
    loss_spec: Any,
    data_cfg: Mapping[str, Any],
    budget: Budget,
    run_dir: Path,
) -> dict[str, Any]:
    """Train through the engine's loop (``restorekit.engine.train.train``) and score the
    final weights per task: ``{"tasks": {task: {"psnr_in", "psnr", ...}}, "mean": ...}``."""
    import warnings

    from restorekit.engine.train import train

    recipe = {
        "name": name,
        "model": dict(model_spec),
        "loss": loss_spec or {"type": "l1"},
        "data": dict(data_cfg),
        "train": {
            "iterations": budget.iterations, "batch_size": budget.batch_size, "lr": budget.lr,
            "schedule": {"type": "warmup_cosine", "min_lr": min(1e-6, budget.lr),
                         "warmup_iters": min(10, budget.iterations // 10)},
            "ema_decay": 0.999 if budget.ema else None, "device": budget.device, "seed": budget.seed,
            "threads": budget.threads, "log_every": max(1, budget.iterations // 5), "val_every": 0,
            "ckpt_every": budget.iterations, "keep_last": 1, "keep_best": False,
            "out_dir": str(run_dir), "progress": False,
        },
        "eval": {"after_train": True, "metrics": ["psnr"], "crop_multiple": 8, "use_ema": budget.ema},
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*randomly initialised.*")
        result = train(recipe, source=f"benchmark:{name}", eval_after=True)
    if not result.final_eval:
        raise RuntimeError(f"{name}: the engine returned no evaluation")
    return result.final_eval
