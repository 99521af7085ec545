"""restorekit diff A B: the keys where two resolved recipes differ."""

from __future__ import annotations

import argparse

from restorekit.commands.show import add_override_argument
from restorekit.recipes import is_missing, load_recipe, recipe_diff


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="first recipe (name or path)")
    parser.add_argument("b", help="second recipe (name or path)")
    add_override_argument(parser)


def run(args: argparse.Namespace) -> int:
    rows = recipe_diff(load_recipe(args.a, args.override), load_recipe(args.b, args.override))
    show = lambda v: "(absent)" if is_missing(v) else repr(v)  # noqa: E731
    for key, va, vb in rows:
        print(f"{key}: {show(va)} -> {show(vb)}")
    if not rows:
        print("no differences")
    return 0
