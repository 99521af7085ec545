"""restorekit data check RECIPE [-o k=v ...]: what a recipe's data section finds, per task, and every bad image.

restorekit data prepare NAME SOURCE [--root DIR] [--link] [--subset LIST]: a downloaded
dataset into the protocol layout, then the same check on it; ``data prepare --list``
shows every dataset it knows and where its authors publish it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from restorekit.commands.show import add_override_argument
from restorekit.data.build import inspect_data
from restorekit.data.check import find_bad_images, iter_report
from restorekit.data.prepare import prepare
from restorekit.data.sources import SOURCES
from restorekit.errors import DataError
from restorekit.recipe_origins import inherited_data_tasks
from restorekit.recipes import load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="build every train and val task, decode every image; print image counts and every bad file"
    )
    check.add_argument("recipe", help="recipe name or YAML path")
    check.add_argument("--no-progress", action="store_true", help="no progress bar while decoding")
    add_override_argument(check)
    prepare = actions.add_parser(
        "prepare",
        help="check a downloaded dataset (archive or folder) and write it into the protocol layout, then check it",
        description="Check a dataset as its authors publish it (a zip or tar, or the unpacked folder) and write "
        "it into the protocol layout under --root, atomically; ends with the `data check` report. "
        "`--list` shows every dataset and where its authors publish it.",
    )
    prepare.add_argument("name", nargs="?", help="dataset name (see --list), e.g. rain100l-train, gopro, lol")
    prepare.add_argument("source", nargs="?", help="the downloaded archive (.zip, .tar, .tar.gz, ...) or its folder")
    prepare.add_argument("--root", default="data", help="the data root to write into (default: ./data)")
    prepare.add_argument(
        "--link", action="store_true", help="symlink the files of an unpacked folder instead of copying them"
    )
    prepare.add_argument(
        "--subset",
        metavar="LIST|all",
        help="RESIDE OTS: a file listing the images to keep (PromptIR's data_dir/hazy/hazy_outside.txt), or all",
    )
    prepare.add_argument("--list", action="store_true", help="list the datasets, their publishers, sizes and licences")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bars")


def _spec_type(spec: Any) -> str:
    """The dataset type to print; never fails, whatever the spec holds (errors come elsewhere)."""
    if isinstance(spec, str):
        return spec
    return str(spec.get("type", "?")) if isinstance(spec, Mapping) else "?"


def run(args: argparse.Namespace) -> int:
    if args.action == "prepare":
        return run_prepare(args)
    recipe = load_recipe(args.recipe, args.override)
    return report(recipe.get("data"), progress=not args.no_progress, origins=inherited_data_tasks(args.recipe))


def report(data_cfg: Any, progress: bool = True, origins: Mapping[str, Any] | None = None) -> int:
    """Print what a data section finds, per task, and every bad image; 1 when anything failed."""
    cfg, entries = inspect_data(data_cfg, origins)
    root = cfg["root"] if cfg["root"] is not None else "(none: protocol datasets use ./data)"
    print(f"data root: {root}" + (f" ({cfg['layout']} layout)" if cfg["layout"] != "restorekit" else ""))
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
    bad = find_bad_images(entries, progress=progress)
    if bad:
        print(f"\n{len(bad)} unreadable image(s):")
        for line in iter_report(bad):
            print(line)
    if failed or bad:
        print(f"\n{failed} task(s) failed, {len(bad)} image(s) unreadable")
        return 1
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    if args.list:
        print_sources()
        return 0
    if not args.name or not args.source:
        raise DataError("data prepare needs NAME and SOURCE (or --list to see the datasets)")
    result = prepare(
        args.name, args.source, args.root, link=args.link, subset=args.subset, progress=not args.no_progress
    )
    source = result.source
    if result.already:
        print(f"{source.name}: already prepared in {result.home} (nothing written; delete the folder to redo it)")
    else:
        mode = "linked" if args.link else "written"
        print(f"{source.name}: {mode} into {result.home}")
    for what, count in result.counts.items():
        print(f"  {what:28s} {count:7,d} files")
    print()
    val = {task: {"dataset": spec} for task, spec in source.check.items()}
    return report({"root": args.root, "val": val}, progress=not args.no_progress)


RECORDED = " (not recorded here: see the publisher's page and its terms)"


def print_sources() -> None:
    """The table of datasets ``data prepare`` knows, for people."""
    for source in SOURCES:
        aliases = f" (also: {', '.join(source.aliases)})" if source.aliases else ""
        print(f"{source.name}{aliases}: {source.title}")
        print(f"  published by  {source.published_by}")
        print(f"  published as  {source.published_as}")
        print(
            f"  size {source.size}; licence {source.licence}"
            + (RECORDED if "not recorded" in (source.size, source.licence) else "")
        )
        print(f"  written to    <root>/{source.home}/")
        if source.note:
            print(f"  note          {source.note}")
        print()
