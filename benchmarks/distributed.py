"""CPU (gloo) step time of the tiny recipe for 1, 2 and 4 processes, with the cores split between them.

Each run trains ``recipes/demo/dino_ir_tiny.yaml`` through the real command line: one
process as ``restorekit train``, N processes under ``torchrun --standalone``. The
global batch stays the recipe's (4), so N processes each take 4 / N samples a step;
each gets ``--cores / N`` threads. The step time is the median over the steps after
``--warmup`` of the seconds per step the run's own log reports (``it_s`` at
``log_every: 1``), so start-up, data listing and checkpoints are left out. Reported
as numbers and as the ratio to one process: no targets, nothing PASS / FAIL.

    python benchmarks/distributed.py                       # 1, 2, 4 processes, 30 steps (an idle machine)
    python benchmarks/distributed.py --quick               # 1 and 2 processes, 3 steps: checks it runs

Writes ``distributed.json`` and ``distributed.md`` into ``--out``, else ``$OUT``, else
``benchmarks/out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bench  # noqa: E402

RECIPE = bench.REPO_ROOT / "recipes" / "demo" / "dino_ir_tiny.yaml"


def command(processes: int, recipe: Path, overrides: list[str]) -> list[str]:
    train = ["-m", "restorekit", "train", str(recipe), *(x for o in overrides for x in ("-o", o))]
    if processes == 1:
        return [sys.executable, *train]
    torchrun = Path(sys.executable).parent / "torchrun"
    return [str(torchrun), "--standalone", "--nproc-per-node", str(processes), *train]


def step_seconds(run_dir: Path, warmup: int) -> list[float]:
    """Seconds per step from the run's log lines (``it_s`` over the one step since the last line)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [1.0 / r["it_s"] for r in lines if "event" not in r and r["step"] > warmup]


def measure(processes: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    threads = max(1, args.cores // processes)
    run_dir = work / f"p{processes}"
    overrides = [
        f"train.iterations={args.steps}", "train.log_every=1", f"train.ckpt_every={args.steps}", "train.val_every=0",
        "train.device=cpu", f"train.threads={threads}", "train.progress=false", "eval.after_train=false",
        f"train.out_dir={run_dir}",
    ]  # fmt: skip
    source = os.pathsep.join(filter(None, [str(bench.REPO_ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PYTHONPATH": source}
    done = subprocess.run(command(processes, args.recipe, overrides), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    seconds = step_seconds(run_dir, args.warmup)
    return {
        "processes": processes,
        "threads_per_process": threads,
        "per_rank_batch": 4 // processes,
        "steps_timed": len(seconds),
        "step_s": statistics.median(seconds),
        "steps_per_s": 1.0 / statistics.median(seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=None, help="process counts (default 1 2 4)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 30; --quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="first steps left out (default 5; --quick 1)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores shared by the processes")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--quick", action="store_true", help="1 and 2 processes, 3 steps: checks that it runs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.processes = args.processes or ([1, 2] if args.quick else [1, 2, 4])
    args.steps = args.steps or (3 if args.quick else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    if any(4 % p for p in args.processes):
        raise SystemExit("--processes: the tiny recipe's global batch is 4; use 1, 2 or 4")
    out = bench.out_dir(args.out)
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(p, args, Path(work)) for p in args.processes]
    base = next((r["step_s"] for r in rows if r["processes"] == 1), None)
    for row in rows:
        row["speedup_vs_1"] = base / row["step_s"] if base else None
    result = {
        "recipe": str(args.recipe),
        "backend": "gloo",
        "cores": args.cores,
        "steps": args.steps,
        "warmup": args.warmup,
        "quick": args.quick,
        "environment": bench.environment(bench.resolve_device("cpu"), "fp32"),
        "rows": rows,
    }
    bench.write_json(out / "distributed.json", result)
    table = bench.markdown_table(
        rows,
        [("processes", "processes"), ("threads each", "threads_per_process"), ("batch each", "per_rank_batch"),
         ("step (s)", "step_s"), ("steps/s", "steps_per_s"), ("vs 1 process", "speedup_vs_1")],
    )  # fmt: skip
    note = " (quick mode: a check that it runs, not a measurement)" if args.quick else ""
    text = (
        f"# CPU (gloo) step time, {args.recipe.name}{note}\n\n"
        f"{args.cores} cores shared; median over steps {args.warmup + 1}..{args.steps}.\n\n{table}\n"
    )
    bench.write_markdown(out / "distributed.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
