"""restorekit check RECIPE [-o k=v ...]: every problem of a recipe at once, before a run starts."""

from __future__ import annotations

import argparse

from restorekit.commands.show import add_override_argument
from restorekit.engine.validate import DATA_SECTIONS, find_problems
from restorekit.recipe_origins import inherited_data_tasks
from restorekit.recipes import recipe_locations, resolve_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name or YAML path")
    add_override_argument(parser)
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="check it for `restorekit eval`: skip the train section and the training data",
    )


def run(args: argparse.Namespace) -> int:
    recipe = resolve_recipe(args.recipe, args.override)
    data = ("val",) if args.eval_only else DATA_SECTIONS
    origins = inherited_data_tasks(args.recipe)
    problems = find_problems(recipe, str(args.recipe), train=not args.eval_only, data=data, origins=origins)
    if problems.found:
        print(problems.message(str(args.recipe), recipe_locations(args.recipe, args.override)))
        return 1
    checked = "model, loss, eval" + ("" if args.eval_only else ", train") + f", data ({', '.join(data)}), published"
    print(f"ok: {args.recipe}: no problems ({checked} checked)")
    return 0
