"""restorekit show RECIPE [-o k=v ...] [--params]: the resolved recipe."""

from __future__ import annotations

import argparse

from restorekit.building import build_model
from restorekit.params import format_param_table
from restorekit.recipes import dump_recipe, load_recipe


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    """The shared ``-o key.path=value`` option."""
    parser.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key (dotted path); repeatable",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name or YAML path")
    add_override_argument(parser)
    parser.add_argument(
        "--params",
        action="store_true",
        help="also build the model and print parameter counts per part",
    )


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.override)
    print(dump_recipe(recipe), end="")
    if args.params:
        model = build_model(recipe["model"])
        print(format_param_table(model))
    return 0
