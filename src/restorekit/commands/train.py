"""restorekit train RECIPE [-o k=v ...] [--resume auto|PATH] [--eval-after]."""

from __future__ import annotations

import argparse
import os

from restorekit.commands.show import add_override_argument
from restorekit.data.build import name_origin
from restorekit.engine.dry_run import dry_run as plan
from restorekit.engine.dry_run import render
from restorekit.engine.train import train
from restorekit.engine.validate import validate
from restorekit.errors import DataError, RecipeError
from restorekit.recipe_origins import inherited_data_tasks
from restorekit.recipes import apply_overrides, recipe_locations, resolve_recipe, validate_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name or YAML path")
    add_override_argument(parser)
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        default=None,
        help="continue a run: 'auto' picks the newest valid checkpoint of train.out_dir (or of the "
        "newest runs/<name>-* folder) and starts fresh when there is none; PATH is a run or "
        "checkpoint folder",
    )
    parser.add_argument(
        "--weights",
        metavar="W",
        help="start from these weights (as train.init_weights): a run, checkpoint or package folder, a Hub "
        "id, a .safetensors file or a released Restormer .pth / PromptIR, AdaIR or MoCE-IR .ckpt; --resume wins "
        "over it",
    )
    parser.add_argument(
        "--eval-after",
        action="store_true",
        help="evaluate the final weights on the held-out images when training ends (as eval.after_train: true)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="train nothing: build the model on the meta device and list the data, then print "
        "parameters per part, FLOPs per step, estimated peak memory per GPU and the data shares",
    )
    parser.add_argument(
        "--world-size",
        type=int,
        metavar="N",
        default=None,
        help="with --dry-run: plan for N processes (default: WORLD_SIZE, else 1)",
    )


def run(args: argparse.Namespace) -> int:
    recipe = resolve_recipe(args.recipe, args.override)
    if args.weights:
        recipe = apply_overrides(recipe, {"train.init_weights": args.weights})
    if args.dry_run:  # lists what it can, each data task's problem beside the others
        validate_recipe(recipe, str(args.recipe))
        return dry_run(recipe, args)
    validate(
        recipe,
        str(args.recipe),
        locations=recipe_locations(args.recipe, args.override),
        origins=inherited_data_tasks(args.recipe),
    )
    try:
        result = train(recipe, source=str(args.recipe), resume=args.resume, eval_after=args.eval_after)
    except DataError as exc:  # a missing inherited task: name the base recipe it comes from
        message = name_origin(str(exc), inherited_data_tasks(args.recipe))
        if message == str(exc):
            raise
        raise DataError(message) from exc
    if int(os.environ.get("RANK", "0")) == 0:  # once per run, not once per process
        if result.final_eval and result.final_eval.get("report"):
            print(result.final_eval["report"], flush=True)
        print(f"done: step {result.step}, run folder {result.run_dir}", flush=True)
    return 0


def dry_run(recipe: dict, args: argparse.Namespace) -> int:
    """Print the dry run; 1 when a data task could not be listed (the rest is still shown)."""
    world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1:
        raise RecipeError(f"--world-size must be >= 1, got {world}")

    report = plan(recipe, str(args.recipe), world, origins=inherited_data_tasks(args.recipe))
    print(render(report), end="", flush=True)
    if report.failed_tasks:
        print(f"\n{len(report.failed_tasks)} data task(s) could not be listed (above)")
        return 1
    return 0
