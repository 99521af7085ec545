"""restorekit init NAME --pairs DIR [--task T] [--base dino_ir]: a recipe for your own image pairs.

Writes ``NAME.yaml`` and ``NAME.heldout.txt`` (the held-out pairs, one name a
line) into ``--out`` (default: the working folder), never over an existing file.
The recipe inherits the model, loss and optimizer of ``--base`` and **replaces**
its data (``_replace_: true`` on ``data.train`` and ``data.val``) with the folder;
the run is sized from the number of training pairs and the batch
(:func:`restorekit.engine.estimate.size_iterations`), and the dry run's FLOPs give
the expected time at an assumed throughput. The next commands are printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from restorekit.data.datasets import PairedFolderDataset
from restorekit.data.split import held_out
from restorekit.engine.dry_run import dry_run
from restorekit.engine.estimate import (
    ASSUMPTION,
    DEFAULT_EPOCHS,
    format_flops,
    format_hours,
    run_flops,
    size_iterations,
    wall_hours,
)
from restorekit.errors import RecipeError, RestorekitError
from restorekit.io.atomic import atomic_path
from restorekit.recipes import find_recipe, list_recipes, load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the new recipe's name: writes NAME.yaml and NAME.heldout.txt")
    parser.add_argument("--pairs", required=True, metavar="DIR", help="folder with lq/ (degraded) and gt/ (clean)")
    parser.add_argument("--task", default="restore", help="task label of the pairs (default: restore)")
    parser.add_argument("--base", default="dino_ir", help="recipe whose model, loss and training to inherit")
    parser.add_argument("--lq", default="lq", help="degraded sub-folder name (default: lq)")
    parser.add_argument("--gt", default="gt", help="clean sub-folder name (default: gt)")
    parser.add_argument("--out", default=".", metavar="DIR", help="where to write the recipe (default: .)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of the pairs held out for validation (default 0.1)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="passes over the training pairs (default 200)")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the base recipe's)")
    parser.add_argument("--no-dry-run", action="store_true", help="skip the dry run (no time estimate)")


def plan(args: argparse.Namespace) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """(the recipe to write, the held-out names, facts for the summary)."""
    base_path = find_recipe(args.base)
    base_ref = args.base if args.base in list_recipes() else str(base_path)  # a name stays a name
    base = load_recipe(base_path)
    pairs_dir = Path(args.pairs).expanduser().resolve()
    names = PairedFolderDataset(str(pairs_dir), lq=args.lq, gt=args.gt, task=args.task).names
    held = held_out(names, args.val_fraction)
    base_train = base.get("train") or {}
    batch = args.batch if args.batch is not None else int(base_train.get("batch_size", 8))
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS
    if batch < 1 or epochs < 1:
        raise RecipeError(f"--batch and --epochs must be >= 1, got {batch} and {epochs}")
    train_pairs = len(names) - len(held)
    iterations = size_iterations(train_pairs, batch, epochs, at_most=base_train.get("iterations"))
    every = max(100, iterations // 10)
    heldout_file = Path(args.out).expanduser().resolve() / f"{args.name}.heldout.txt"
    folder = {"type": "paired_folder", "path": str(pairs_dir), "lq": args.lq, "gt": args.gt}
    recipe = {
        "base": base_ref,
        "name": args.name,
        "description": f"{args.base} trained on the pairs in {pairs_dir} (task {args.task!r}); "
        f"written by `restorekit init --pairs`",
        "data": {
            "train": {"_replace_": True, args.task: {"dataset": {**folder, "exclude": str(heldout_file)}}},
            "val": {"_replace_": True, args.task: {"dataset": {**folder, "subset": str(heldout_file)}}},
        },
        "train": {
            "iterations": iterations,
            "batch_size": batch,
            "schedule": {"warmup_iters": iterations // 10},
            "val_every": every,
            "ckpt_every": every,
        },
        "eval": {"suites": {"_replace_": True}},  # the protocol's unseen sets are not unseen data for your pairs
        "published": None,
    }
    facts = {"pairs": len(names), "train_pairs": train_pairs, "epochs": epochs, "batch": batch}
    return recipe, held, facts


HEADER = """\
# Written by `restorekit init {name} --pairs {folder}` (docs/data.md#your-own-pairs).
# data: the protocol tasks of the base are replaced (_replace_: true) by your folder; the
#   held-out pairs are listed in {heldout} (train excludes them, val reads only them).
# train.iterations: ceil({epochs} epochs x {train_pairs} training pairs / batch {batch}),
#   at least 1,000 and at most the base's iterations; warmup 10%, validation and
#   checkpoints every 10%.
"""


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    recipe_file, heldout_file = out / f"{args.name}.yaml", out / f"{args.name}.heldout.txt"
    for path in (recipe_file, heldout_file):
        if path.exists():
            raise RecipeError(f"{path} exists; pick another NAME or --out (nothing was written)")
    recipe, held, facts = plan(args)
    out.mkdir(parents=True, exist_ok=True)
    header = HEADER.format(name=args.name, folder=args.pairs, heldout=heldout_file.name, **facts)
    # Both files are created exclusively: one that appears meanwhile is kept, and so is nothing of ours.
    with atomic_path(heldout_file, replace=False) as tmp:
        tmp.write_text("".join(f"{name}\n" for name in held), encoding="utf-8")
    try:
        with atomic_path(recipe_file, replace=False) as tmp:
            tmp.write_text(header + yaml.safe_dump(recipe, sort_keys=False, width=100), encoding="utf-8")
    except BaseException:
        heldout_file.unlink()
        raise
    print(f"wrote {recipe_file}")
    print(f"wrote {heldout_file} ({len(held)} of {facts['pairs']} pairs held out for validation)")
    print(
        f"run: {recipe['train']['iterations']:,} steps at a global batch of {facts['batch']} "
        f"(~{facts['epochs']} epochs of {facts['train_pairs']} training pairs)"
    )
    if not args.no_dry_run:
        print(expected_time(recipe_file))
    print("\nnext:")
    print(f"  restorekit data check {recipe_file}         # every pair found and readable")
    print(f"  restorekit train {recipe_file} --dry-run    # parameters, FLOPs, memory per GPU")
    print(f"  restorekit train {recipe_file} --eval-after")
    print(f"  torchrun --nproc_per_node 4 -m restorekit train {recipe_file}   # on 4 GPUs")
    return 0


def expected_time(recipe_file: Path) -> str:
    """The dry run's FLOPs of the whole run, and hours at the assumed throughput on 1, 4, 8 GPUs."""
    try:
        report = dry_run(load_recipe(recipe_file), str(recipe_file), world_size=1)
    except RestorekitError as exc:
        return f"expected time: unknown, the dry run failed: {exc}"
    total = run_flops(report.flops_micro * report.cfg.accumulate, report.cfg.iterations)
    hours = ", ".join(f"{format_hours(wall_hours(total, n))} on {n} GPU{'s' if n > 1 else ''}" for n in (1, 4, 8))
    return f"expected time (dry run: {format_flops(total)} in all): {hours}\n  ({ASSUMPTION})"
