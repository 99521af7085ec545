"""Write the expected-GPU-hours table of docs/data.md from the dry run's FLOPs.

For each protocol recipe, ``restorekit train RECIPE --dry-run`` counts the FLOPs of one
optimizer step (forward, loss with its backbone passes, backward; on the meta device,
no GPU needed); the whole run is that times ``train.iterations``. Hours follow from
an **assumed** sustained throughput per GPU and ideal scaling
(:mod:`restorekit.engine.estimate`): no GPU step time has been measured yet.

    python scripts/gpu_hours.py            # rewrite the table in docs/data.md
    python scripts/gpu_hours.py --check    # exit 1 if docs/data.md is out of date
    python scripts/gpu_hours.py --print    # print the table only
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "data.md"
START, END = "<!-- gpu-hours:start -->", "<!-- gpu-hours:end -->"
RECIPES = ("dino_ir", "dino_ir_5task", "baselines/promptir", "baselines/adair", "baselines/adair_5task")
GPUS = (1, 4, 8)


def measure(name: str, batch_size: int | None = None) -> tuple[float, int, int]:
    """(FLOPs of one optimizer step, all GPUs; iterations; global batch) of recipe ``name``."""
    from restorekit.engine.dry_run import dry_run
    from restorekit.recipes import load_recipe

    overrides = {"train.batch_size": batch_size} if batch_size else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = dry_run(load_recipe(name, overrides), name, world_size=1)
    return float(report.flops_micro * report.cfg.accumulate), report.cfg.iterations, report.cfg.batch_size


def measured_throughput() -> str:
    """The sustained TFLOP/s of the measured step: its dry-run FLOPs over its measured time."""
    from restorekit.engine.estimate import MEASURED_STEP, format_flops

    step, _, batch = measure(MEASURED_STEP["recipe"], MEASURED_STEP["batch_size"])
    achieved = step / MEASURED_STEP["seconds"] / 1e12
    return (
        f"The measured step: `{MEASURED_STEP['recipe']}` at batch {batch} on {MEASURED_STEP['device']}, "
        f"{MEASURED_STEP['seconds'] * 1000:.0f} ms for {format_flops(step)} = {achieved:.1f} TFLOP/s."
    )


def table(names: tuple[str, ...] = RECIPES) -> str:
    from restorekit.engine.estimate import ASSUMPTION, format_flops, format_hours, run_flops, wall_hours

    header = ["recipe", "batch", "steps", "FLOPs / step", "whole run", "GPU hours"] + [
        f"wall, {n} GPU{'s' if n > 1 else ''}" for n in GPUS
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name in names:
        step, iterations, batch = measure(name)
        total = run_flops(step, iterations)
        hours = [format_hours(wall_hours(total, n)) for n in GPUS]
        gpu_hours = format_hours(wall_hours(total, 1))
        cells = [f"`{name}`", str(batch), f"{iterations:,}", format_flops(step), format_flops(total), gpu_hours, *hours]
        lines.append("| " + " | ".join(cells) + " |")
    note = "GPU hours are the same at 1, 4 and 8 GPUs under ideal scaling; wall hours = GPU hours / GPUs"
    return "\n".join(lines) + f"\n\nHours: {ASSUMPTION}. {measured_throughput()} {note}.\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/data.md is out of date")
    mode.add_argument("--print", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    text = table()
    if args.print:
        print(text, end="")
        return 0
    doc = DOC.read_text(encoding="utf-8")
    before, rest = doc.split(START, 1)
    _, after = rest.split(END, 1)
    new = f"{before}{START}\n{text}{END}{after}"
    if args.check:
        if new != doc:
            print(f"{DOC} is out of date: run python scripts/gpu_hours.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    print(f"wrote the table into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
