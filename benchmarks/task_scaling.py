"""The task-count experiment (the paper's Figure 1): quality per task as tasks are added.

With one training budget (iterations, batch, learning rate, seed), each model is
trained on the first 1, 2, 3, 4 and 5 tasks (noise, rain, haze, blur, low light)
and every trained task is scored (PSNR) on held-out images. The paper's claim is
that a plain all-in-one network loses quality per task as tasks are added and
DINO-IR loses less. Training and scoring go through the engine's loop
(``restorekit.engine.train.train``).

    python benchmarks/task_scaling.py --tiny                       # CPU, photographs, minutes
    python benchmarks/task_scaling.py --tiny --report              # and a report comparing the runs
    python benchmarks/task_scaling.py --data-recipe my_5task_data  # GPU, your data, full size
    python benchmarks/task_scaling.py --data-recipe protocol       # GPU, the protocols' data, 1 to 5 tasks

Without ``--data-recipe`` the tasks are synthetic degradations of scikit-image's
photographs (the ``samples`` dataset); with it, the recipe's ``data`` section is
used and its ``data.train`` tasks, in order, are added one by one (entries
``denoise_15/25/50`` form one task, ``denoise``; ``--tasks`` picks and orders
them; the ``data.val`` entries of the tasks trained are scored).
``--data-recipe protocol`` runs 1 to 5 tasks (noise, rain, haze, blur, low light) on
the protocols' own data sections: 3 tasks are exactly ``dino_ir`` (PromptIR's
protocol), 4 exactly ``dino_ir_4task`` (the paper summary's four degradations: noise,
blur, rain, haze), 5 exactly ``dino_ir_5task`` (AdaIR's); 1 and 2 tasks are ``dino_ir``
cut down to them. Without a data recipe the photographs' first four tasks are the
same four degradations.
Tiny runs use a randomly initialised tiny DINOv2, so they exercise the experiment,
not the paper's result.
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
PROTOCOL = "protocol"  # --data-recipe protocol: the 3-, 4- and 5-task recipes' own data
PROTOCOL_RECIPES = ("dino_ir", "dino_ir_4task", "dino_ir_5task")  # by task count: 3, 4, 5


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU, 32 px patches")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="recipes whose model and loss train")
    parser.add_argument(
        "--data-recipe",
        help="recipe (name or path) whose data section to use instead of the photographs; 'protocol': "
        "dino_ir / dino_ir_4task / dino_ir_5task's own data at 3 / 4 / 5 tasks",
    )
    parser.add_argument("--tasks", help="comma-separated tasks in the order they are added (default: all, in order)")
    parser.add_argument("--max-tasks", type=int, help="stop after this many tasks (default: all)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write OUT/<name>_report.html (and .md): restorekit report of every finished run "
        "(recipes, scores, curves), the first run the baseline",
    )
    short_runs.add_run_arguments(parser, "task_scaling", "training steps per run (default: 600 tiny, 20000 full)")
    return parser.parse_args(argv)


def task_order(args: argparse.Namespace, data_recipe: Mapping[str, Any] | None) -> list[str]:
    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    elif data_recipe is not None:
        tasks = short_runs.data_tasks(data_recipe.get("data") or {})
    else:
        tasks = list(short_runs.FIVE_TASKS)
    if args.max_tasks:
        tasks = tasks[: args.max_tasks]
    if not tasks:
        raise SystemExit("no tasks to train on")
    return tasks


def protocol_data(tasks: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """(recipe, data section) for ``tasks``: the smallest protocol recipe that trains them all,
    its own data section when it trains exactly them, else cut down to them."""
    from restorekit import load_recipe

    for name in PROTOCOL_RECIPES:
        data = load_recipe(name)["data"]
        known = short_runs.data_tasks(data)
        if set(tasks) == set(known):
            return name, dict(data)
        if set(tasks) <= set(known):
            return name, short_runs.subset_data(data, tasks)
    raise SystemExit(f"no protocol recipe trains the tasks {list(tasks)}")


def data_for(tasks: Sequence[str], args: argparse.Namespace, data_recipe: Mapping[str, Any] | None) -> dict[str, Any]:
    if args.data_recipe == PROTOCOL:
        return protocol_data(tasks)[1]
    if data_recipe is not None:
        return short_runs.subset_data(data_recipe.get("data") or {}, tasks)
    patch = args.patch_size or (32 if args.tiny else 128)
    return short_runs.samples_data(tasks, patch, args.eval_size or (96 if args.tiny else 256), seed=args.seed)


def budget_from(args: argparse.Namespace) -> short_runs.Budget:
    return short_runs.Budget(
        iterations=args.iterations or (600 if args.tiny else 20000),
        batch_size=args.batch_size or (4 if args.tiny else 8),
        lr=args.lr or (2e-3 if args.tiny else 2e-4),
        device=args.device or ("cpu" if args.tiny else "auto"),
        seed=args.seed,
        ema=not args.tiny,  # short tiny runs score the raw weights (an EMA would lag them)
        threads=args.threads or (1 if args.tiny else None),  # 1: a shared CPU (see docs/performance.md)
    )


def render(result: Mapping[str, Any]) -> str:
    tasks, budget = result["columns"], result["budget"]
    lines = [
        "# Task scaling: PSNR per task as tasks are added" + (" (tiny)" if result["tiny"] else ""),
        "",
        f"Budget per run: {budget['iterations']} iterations, batch {budget['batch_size']}, lr {budget['lr']}, "
        f"seed {budget['seed']}; data: {result['data']}; device: {result['device']}.",
    ]
    if result["tiny"]:
        lines.append(
            "Tiny models and a randomly initialised tiny DINOv2: this exercises the experiment; "
            "it says nothing about the paper's numbers."
        )
    cols = [("model", "model"), ("tasks", "n")] + [(t, t, "{:.2f}") for t in tasks] + [("mean", "mean", "{:.2f}")]
    table = []
    for row in result["rows"]:
        entry = {"model": row["model"], "n": row["n_tasks"], "mean": row.get("mean_psnr")}
        entry.update({t: v for t, v in row.get("psnr", {}).items()})
        if "error" in row and tasks:
            entry[tasks[0]] = "ERROR: " + row["error"][:60]
        table.append(entry)
    lines += ["", "PSNR (dB) of the restored test images; '-': that task is not trained yet.", "",
              bench.markdown_table(table, cols)]  # fmt: skip
    inputs = result.get("input_psnr") or {}
    if inputs:
        lines += ["", "Input PSNR (degraded vs clean): " + ", ".join(f"{t} {v:.2f}" for t, v in inputs.items())]
    drops = result.get("drops") or []
    if drops:
        lines += ["", "Change of each task's PSNR from when it was added to the run with the most tasks that finished (dB):", "",
                  bench.markdown_table(drops, [("model", "model")] + [(t, t, "{:+.2f}") for t in tasks])]  # fmt: skip
    return "\n".join(lines)


def drops(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> list[dict[str, Any]]:
    """Per model and task: PSNR in the run with the most tasks minus PSNR when first trained."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        runs = sorted((r for r in rows if r["model"] == model and "psnr" in r), key=lambda r: r["n_tasks"])
        if len(runs) < 2:
            continue
        entry: dict[str, Any] = {"model": model}
        for task in tasks:
            seen = [r["psnr"][task] for r in runs if task in r["psnr"]]
            if len(seen) >= 2:
                entry[task] = seen[-1] - seen[0]
        out.append(entry)
    return out


def plot(result: Mapping[str, Any], path: Path) -> bool:
    """Figure-1 style: one panel per model, one line per task, PSNR against task count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = list(dict.fromkeys(r["model"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.5), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        runs = sorted((r for r in result["rows"] if r["model"] == model and "psnr" in r), key=lambda r: r["n_tasks"])
        for task in result["columns"]:
            points = [(r["n_tasks"], r["psnr"][task]) for r in runs if task in r["psnr"]]
            if points:
                ax.plot(*zip(*points), marker="o", label=task)
        ax.set_title(model)
        ax.set_xlabel("tasks trained")
        ax.set_xticks(range(1, len(result["tasks"]) + 1))  # one tick per training task count
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR (dB)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    from restorekit.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return True


def write_run_report(run_dirs: Sequence[Path], html: Path) -> Path:
    """``restorekit report`` of the runs (replacing an earlier report, as the other outputs are)."""
    from restorekit.report.render import write_report
    from restorekit.report.runs import read_runs

    write_report(read_runs(list(run_dirs)), html, overwrite=True)
    return html


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from restorekit import load_recipe

    if args.data_recipe == PROTOCOL:  # the task order of the largest protocol
        data_recipe = load_recipe(PROTOCOL_RECIPES[-1])
    else:
        data_recipe = load_recipe(args.data_recipe) if args.data_recipe else None
    if data_recipe is not None and not data_recipe.get("data"):
        raise SystemExit(f"--data-recipe {args.data_recipe}: the recipe has no data section")
    tasks = task_order(args, data_recipe)
    budget = budget_from(args)
    folder = bench.out_dir(args.out)
    name = args.name or ("task_scaling_tiny" if args.tiny else "task_scaling")
    specs = {}
    for recipe in args.models:
        model_spec, loss_spec = bench.model_and_loss_specs(recipe, args.tiny)
        specs[bench.short_name(recipe)] = (
            short_runs.with_backbone_weights(model_spec, args.backbone_weights)[0],
            loss_spec,
        )
    keep = folder / f"{name}_runs" if args.keep_runs else None
    rows: list[dict[str, Any]] = []
    input_psnr: dict[str, float] = {}
    failed = 0
    finished: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="restorekit-task-scaling-") as scratch:
        runs_root = keep or Path(scratch)
        for n in range(1, len(tasks) + 1):
            chosen = tasks[:n]
            data_cfg = data_for(chosen, args, data_recipe)
            for model, (model_spec, loss_spec) in specs.items():
                t0 = time.perf_counter()
                row: dict[str, Any] = {"model": model, "n_tasks": n, "tasks": chosen}
                run_dir = runs_root / f"{model}-{n}tasks"
                if run_dir.exists():
                    import shutil

                    shutil.rmtree(run_dir)
                print(f"== {model} on {n} task(s): {', '.join(chosen)}", flush=True)
                try:
                    scores = short_runs.train_and_evaluate(f"{model}-{n}tasks", model_spec, loss_spec, data_cfg,
                                                      budget, run_dir)  # fmt: skip
                    row["psnr"] = {t: s["psnr"] for t, s in scores["tasks"].items()}
                    row["mean_psnr"] = scores["mean"]["psnr"]
                    for t, s in scores["tasks"].items():
                        input_psnr.setdefault(t, s["psnr_in"])
                    finished.append(run_dir)
                except Exception as exc:  # noqa: BLE001 - report and go on with the next run
                    import traceback

                    traceback.print_exc()
                    failed += 1
                    row["error"] = f"{type(exc).__name__}: {exc}"
                row["wall_s"] = time.perf_counter() - t0
                rows.append(row)
        report = write_run_report(finished, folder / f"{name}_report.html") if args.report and finished else None
    import torch

    columns = list(dict.fromkeys(t for r in rows for t in r.get("psnr", {})))  # scored sets, in order
    result = {
        "tiny": args.tiny, "tasks": tasks, "models": list(specs), "budget": budget.__dict__,
        "data": args.data_recipe or "scikit-image photographs (samples dataset), synthetic degradations",
        "device": bench.device_name(bench.resolve_device(budget.device)), "torch": torch.__version__,
        "columns": columns, "rows": rows, "input_psnr": input_psnr, "drops": drops(rows, columns),
    }  # fmt: skip
    bench.write_json(folder / f"{name}.json", result)
    text = render(result)
    bench.write_markdown(folder / f"{name}.md", text)
    plotted = plot(result, folder / f"{name}.png")
    print("\n" + text)
    print(f"\nwrote {folder / (name + '.json')}, {name}.md" + (f", {name}.png" if plotted else ""))
    if report is not None:
        print(f"report of the runs: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
