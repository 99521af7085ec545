"""restorekit train RECIPE [-o k=v ...] [--resume auto|PATH] [--eval-after]."""

from __future__ import annotations

import argparse
import os

from restorekit.commands.show import add_override_argument

HELP = "train a recipe (iteration-based; resumable; multi-GPU when launched with torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name or YAML path")
    add_override_argument(parser)
    parser.add_argument(
        "--resume", metavar="auto|PATH", default=None,
        help="continue a run: 'auto' picks the newest valid checkpoint of train.out_dir (or of the "
             "newest runs/<name>-* folder) and starts fresh when there is none; PATH is a run or "
             "checkpoint folder",
    )
    parser.add_argument(
        "--eval-after", action="store_true",
        help="evaluate the final weights on the held-out images when training ends "
             "(as eval.after_train: true)",
    )


def run(args: argparse.Namespace) -> int:
    from restorekit.engine.train import train
    from restorekit.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.override)
    result = train(recipe, source=str(args.recipe), resume=args.resume, eval_after=args.eval_after)
    if int(os.environ.get("RANK", "0")) == 0:  # once per run, not once per process
        if result.final_eval and result.final_eval.get("report"):
            print(result.final_eval["report"], flush=True)
        print(f"done: step {result.step}, run folder {result.run_dir}", flush=True)
    return 0
