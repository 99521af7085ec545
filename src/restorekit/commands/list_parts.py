"""restorekit list [KIND]: the registered parts and where each comes from."""

from __future__ import annotations

import argparse

from restorekit.listing import list_parts
from restorekit.recipe_plugins import recipe_plugins
from restorekit.recipes import list_recipes
from restorekit.registry import registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="one kind of part, or 'recipes'")


def run(args: argparse.Namespace) -> int:
    if args.kind == "recipes":
        for name, source in sorted(list_recipes().items()):
            print(f"{name:40s} {source}")
        for plugin in recipe_plugins():
            if plugin.error:
                print(f"{'(recipes)':40s} {plugin.source}  [FAILED: {plugin.error}]")
        return 0
    if args.kind:
        registry(args.kind)  # clear error for an unknown kind
    rows = list_parts(args.kind)
    width = max((len(r.name) for r in rows), default=4)
    print(f"{'name':{width}s}  {'kind':11s} source")
    for row in rows:
        status = f"  [FAILED: {row.error}]" if row.status == "failed" else ""
        print(f"{row.name:{width}s}  {row.kind:11s} {row.source}{status}")
    return 0
