"""restorekit data check RECIPE [-o k=v ...]: what a recipe's data section finds, per task, and every bad image."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from restorekit.commands.show import add_override_argument

HELP = "inspect a recipe's data section (data check: image counts and problems per task)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="build every train and val task, decode every image; print image counts and every bad file"
    )
    check.add_argument("recipe", help="recipe name or YAML path")
    check.add_argument("--no-progress", action="store_true", help="no progress bar while decoding")
    add_override_argument(check)


def _spec_type(spec: Any) -> str:
    """The dataset type to print; never fails, whatever the spec holds (errors come elsewhere)."""
    if isinstance(spec, str):
        return spec
    return str(spec.get("type", "?")) if isinstance(spec, Mapping) else "?"


def run(args: argparse.Namespace) -> int:
    from restorekit.data.build import inspect_data
    from restorekit.data.check import find_bad_images, iter_report
    from restorekit.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.override)
    cfg, entries = inspect_data(recipe.get("data"))
    root = cfg["root"] if cfg["root"] is not None else "(none: protocol datasets use ./data)"
    print(f"data root: {root}")
    print(
        f"patch_size {cfg['patch_size']}, augment {'on' if cfg['augment'] else 'off'}, num_workers {cfg['num_workers']}"
    )
    failed = 0
    for section in ("train", "val"):
        rows = [e for e in entries if e.section == section]
        print(f"\n{section}:" if rows else f"\n{section}: (no task)")
        if not rows:
            continue
        ok = [e for e in rows if e.error is None]
        total = sum(e.share for e in ok) if section == "train" else 0
        width = max(len(e.name) for e in rows)
        for entry in rows:
            kind = _spec_type(entry.spec)
            if entry.error is not None:
                failed += 1
                print(f"  {entry.name:{width}s}  {kind:14s} ERROR: {entry.error}")
                continue
            line = f"  {entry.name:{width}s}  {kind:14s} {len(entry.dataset):7d} images"
            if section == "train":
                rule = f"weight {entry.weight}" if entry.weight is not None else f"repeat {entry.repeat or 1}"
                line += f"  {rule:12s} {100 * entry.share / total:5.1f}% of samples"
            print(line)
    bad = find_bad_images(entries, progress=not args.no_progress)
    if bad:
        print(f"\n{len(bad)} unreadable image(s):")
        for line in iter_report(bad):
            print(line)
    if failed or bad:
        print(f"\n{failed} task(s) failed, {len(bad)} image(s) unreadable")
        return 1
    return 0
