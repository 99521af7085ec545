"""Seen vs unseen degradations (the summary's question 6): the gap per model, on the CPU.

Trains each recipe (default: the CPU demo ``demo/dino_ir_tiny`` and its body alone,
``demo/restormer_tiny``) through the engine's loop, then scores the final weights on
the recipe's test tasks (``data.val``: the degradation ranges it trained on) and on
its ``eval.suites.unseen`` tasks (noise at sigma 75, denser rain, thicker haze on the
held-out photographs). Each unseen task is paired with the seen task its name starts
with (``noise_75`` -> ``noise``); the gap is the seen gain minus the unseen gain
(gain: restored PSNR minus input PSNR), so a smaller gap generalises better.

    python benchmarks/unseen_gap.py --quick          # 2 tiny runs of 60 steps, under a minute
    python benchmarks/unseen_gap.py                  # the demo's full 2000 steps per model

Tiny models with a randomly initialised backbone: this exercises the experiment; it
says nothing about the paper's result (which needs the real DINOv2 weights and data:
``restorekit eval dino_ir --weights RUN --suite unseen``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bench  # noqa: E402

DEFAULT_MODELS = ("demo/dino_ir_tiny", "demo/restormer_tiny")
SUITE = "unseen"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="60 steps, 32 px patches, 64 px test images")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="recipes with an unseen suite")
    parser.add_argument("--iterations", type=int, help="training steps per model (default: the recipe's; 60 quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="results folder (default benchmarks/out)")
    parser.add_argument("--name", help="file stem of the results (default unseen_gap[_quick])")
    return parser.parse_args(argv)


def overrides(recipe: Mapping[str, Any], args: argparse.Namespace, run_dir: Path) -> list[str]:
    """Recipe overrides for this run: budget, threads, output folder; smaller images with --quick."""
    out = [f"train.out_dir={run_dir}", f"train.threads={args.threads}", f"train.seed={args.seed}",
           "train.progress=false", "eval.grid=false"]  # fmt: skip
    iterations = args.iterations or (60 if args.quick else None)
    if iterations:
        out += [f"train.iterations={iterations}", f"train.schedule.warmup_iters={max(1, iterations // 10)}",
                f"train.ckpt_every={iterations}", f"train.log_every={max(1, iterations // 5)}"]  # fmt: skip
    if args.quick:
        out.append("data.patch_size=32")
        sections = [("data.val", recipe["data"]["val"]), (f"eval.suites.{SUITE}", recipe["eval"]["suites"][SUITE])]
        for prefix, tasks in sections:
            out += [f"{prefix}.{task}.dataset.max_size=64" for task in tasks]
    return out


def gains(scores: Mapping[str, Any]) -> dict[str, float]:
    """Task -> restored PSNR minus input PSNR."""
    return {task: row["psnr"] - row["psnr_in"] for task, row in scores["tasks"].items()}


def paired_rows(model: str, seen: Mapping[str, float], unseen: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per unseen task, beside the seen task its name starts with."""
    rows = []
    for task, gain in unseen.items():
        base = task.split("_", 1)[0]
        row = {"model": model, "seen": base, "seen_gain": seen.get(base), "unseen": task, "unseen_gain": gain}
        row["gap"] = None if row["seen_gain"] is None else row["seen_gain"] - gain
        rows.append(row)
    return rows


def run_model(name: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    import torch

    from restorekit import load_recipe
    from restorekit.data.build import build_eval_sets
    from restorekit.engine.config import eval_config
    from restorekit.engine.evaluate import evaluate, suite_data
    from restorekit.engine.loading import load_model_for_inference
    from restorekit.engine.train import train

    run_dir = scratch / bench.short_name(name)
    recipe = load_recipe(name, overrides(load_recipe(name), args, run_dir))
    cfg = eval_config(recipe, name)
    if SUITE not in cfg.suites:
        raise SystemExit(f"{name}: the recipe has no eval.suites.{SUITE}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*randomly initialised.*")
        result = train(recipe, source=f"benchmark:{name}", eval_after=True)
        model, _, _ = load_model_for_inference(recipe, result.run_dir, use_ema=cfg.use_ema)
        sets = build_eval_sets(suite_data(recipe["data"], cfg, SUITE, name))
        unseen = evaluate(model, sets, cfg, torch.device("cpu"))
    return {"seen": result.final_eval, "unseen": unseen, "iterations": recipe["train"]["iterations"]}


def render(result: Mapping[str, Any]) -> str:
    cols = [("model", "model"), ("seen task", "seen"), ("gain seen", "seen_gain", "{:+.2f}"),
            ("unseen task", "unseen"), ("gain unseen", "unseen_gain", "{:+.2f}"), ("gap", "gap", "{:.2f}")]  # fmt: skip
    lines = [
        "# Seen vs unseen degradations" + (" (quick)" if result["quick"] else ""),
        "",
        f"Training steps per model: {result['iterations']}; seed {result['seed']}; threads {result['threads']}; "
        "held-out scikit-image photographs. Gain: restored minus input PSNR (dB); gap: seen gain minus unseen gain.",
        "Tiny models, random backbone: this exercises the experiment, not the paper's result.",
        "",
        bench.markdown_table(result["rows"], cols),
        "",
        "Mean gap per model: " + ", ".join(f"{m} {g:.2f} dB" for m, g in result["mean_gap"].items()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folder = bench.out_dir(args.out)
    name = args.name or ("unseen_gap_quick" if args.quick else "unseen_gap")
    rows: list[dict[str, Any]] = []
    iterations = {}
    with tempfile.TemporaryDirectory(prefix="restorekit-unseen-") as scratch:
        for recipe in args.models:
            print(f"== {recipe}", flush=True)
            scores = run_model(recipe, args, Path(scratch))
            iterations[bench.short_name(recipe)] = scores["iterations"]
            rows += paired_rows(bench.short_name(recipe), gains(scores["seen"]), gains(scores["unseen"]))
    mean_gap = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        gaps = [r["gap"] for r in rows if r["model"] == model and r["gap"] is not None]
        if gaps:
            mean_gap[model] = sum(gaps) / len(gaps)
    result = {"quick": args.quick, "seed": args.seed, "threads": args.threads, "models": args.models,
              "iterations": ", ".join(f"{m} {n}" for m, n in iterations.items()), "rows": rows,
              "mean_gap": mean_gap}  # fmt: skip
    bench.write_json(folder / f"{name}.json", result)
    text = render(result)
    bench.write_markdown(folder / f"{name}.md", text)
    print("\n" + text)
    print(f"\nwrote {folder / (name + '.json')}, {name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
