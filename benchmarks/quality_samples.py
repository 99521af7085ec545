"""Restormer versus DINO-IR on scikit-image's photographs, with the same training budget.

Both models train through the engine's loop on the same synthetic tasks (noise,
rain, haze, blur, low light on the 'train' photographs), with the same
iterations, batch, learning rate and seed, and are scored per task (PSNR) on
the held-out 'test' photographs. It is a quick, data-free sanity comparison;
it claims nothing about the paper's numbers (tiny models, few photographs, a
randomly initialised backbone unless ``--backbone-weights`` is given).

    python benchmarks/quality_samples.py --tiny                  # CPU, minutes
    python benchmarks/quality_samples.py --iterations 5000       # full-size models, GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bench  # noqa: E402
import short_runs  # noqa: E402

DEFAULT_MODELS = ("baselines/restormer", "dino_ir")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU, 48 px patches")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="recipes whose model and loss train")
    parser.add_argument(
        "--tasks", default=",".join(short_runs.FIVE_TASKS), help="comma-separated tasks (default: all five)"
    )
    short_runs.add_run_arguments(parser, "quality_samples", "training steps per model (default: 1200 tiny, 5000 full)")
    return parser.parse_args(argv)


def render(result: Mapping[str, Any]) -> str:
    models, tasks, budget = result["models"], result["tasks"], result["budget"]
    lines = [
        "# Quality on scikit-image's photographs" + (" (tiny)" if result["tiny"] else ""),
        "",
        f"Same budget for every model: {budget['iterations']} iterations, batch {budget['batch_size']}, "
        f"lr {budget['lr']}, seed {budget['seed']}, {result['device']}. PSNR (dB) on the held-out test "
        f"photographs ({', '.join(result['test_images'])}), synthetic degradations with fixed seeds.",
        "This is a sanity comparison on a few photographs; it claims nothing about the paper's numbers"
        + (" (and the backbone is randomly initialised)." if result["random_backbone"] else "."),
        "",
    ]
    rows = []
    for task in tasks + ["mean"]:
        row: dict[str, Any] = {"task": task, "input": result["input_psnr"].get(task)}
        for model in models:
            row[model] = result["psnr"].get(model, {}).get(task)
        if len(models) == 2 and all(row.get(m) is not None for m in models):
            row["delta"] = row[models[1]] - row[models[0]]
        rows.append(row)
    cols = [("task", "task"), ("input", "input", "{:.2f}")] + [(m, m, "{:.2f}") for m in models]
    if len(models) == 2:
        cols.append((f"{models[1]} - {models[0]}", "delta", "{:+.2f}"))
    lines.append(bench.markdown_table(rows, cols))
    for model, error in result.get("errors", {}).items():
        lines.append(f"\n{model}: ERROR {error}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    budget = short_runs.Budget(
        iterations=args.iterations or (1200 if args.tiny else 5000),
        batch_size=args.batch_size or (4 if args.tiny else 8),
        lr=args.lr or (2e-3 if args.tiny else 2e-4),
        device=args.device or ("cpu" if args.tiny else "auto"),
        seed=args.seed,
        ema=not args.tiny,
        threads=args.threads or (1 if args.tiny else None),
    )
    data_cfg = short_runs.samples_data(tasks, args.patch_size or (48 if args.tiny else 128),
                                  args.eval_size or (96 if args.tiny else 256), seed=args.seed)  # fmt: skip
    folder = bench.out_dir(args.out)
    name = args.name or ("quality_samples_tiny" if args.tiny else "quality_samples")
    psnr: dict[str, dict[str, float]] = {}
    input_psnr: dict[str, float] = {}
    errors: dict[str, str] = {}
    walls: dict[str, float] = {}
    random_backbone = False
    with tempfile.TemporaryDirectory(prefix="restorekit-quality-") as scratch:
        runs_root = folder / f"{name}_runs" if args.keep_runs else Path(scratch)
        for recipe in args.models:
            model = bench.short_name(recipe)
            model_spec, loss_spec = bench.model_and_loss_specs(recipe, args.tiny)
            model_spec, random = short_runs.with_backbone_weights(model_spec, args.backbone_weights)
            random_backbone = random_backbone or random
            print(f"== {model} on {', '.join(tasks)}", flush=True)
            t0 = time.perf_counter()
            run_dir = runs_root / model
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            try:
                scores = short_runs.train_and_evaluate(model, model_spec, loss_spec, data_cfg, budget, run_dir)
                psnr[model] = {t: s["psnr"] for t, s in scores["tasks"].items()}
                psnr[model]["mean"] = scores["mean"]["psnr"]
                for t, s in scores["tasks"].items():
                    input_psnr.setdefault(t, s["psnr_in"])
                input_psnr.setdefault("mean", scores["mean"]["psnr_in"])
            except Exception as exc:  # noqa: BLE001 - report and go on with the next model
                import traceback

                traceback.print_exc()
                errors[model] = f"{type(exc).__name__}: {exc}"
            walls[model] = time.perf_counter() - t0
    from restorekit.data.samples import TEST_IMAGES

    result = {
        "tiny": args.tiny, "models": [bench.short_name(m) for m in args.models], "tasks": tasks,
        "budget": budget.__dict__, "device": bench.device_name(bench.resolve_device(budget.device)),
        "test_images": list(TEST_IMAGES), "random_backbone": random_backbone,
        "psnr": psnr, "input_psnr": input_psnr, "errors": errors, "wall_s": walls,
    }  # fmt: skip
    text = render(result)
    bench.write_json(folder / f"{name}.json", result)
    bench.write_markdown(folder / f"{name}.md", text)
    print("\n" + text)
    print(f"\nwrote {folder / (name + '.json')} and {name}.md")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
