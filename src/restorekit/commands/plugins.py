"""restorekit plugins [--check]: plugin parts found through entry points."""

from __future__ import annotations

import argparse

from restorekit.recipe_plugins import recipe_plugins
from restorekit.registry import KINDS, registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="import every plugin; exit 1 if any fails")


def run(args: argparse.Namespace) -> int:
    failed = 0
    shown = 0
    for kind in KINDS:
        reg = registry(kind)
        if args.check:
            reg.check_all()
        for entry in reg.plugin_entries():
            shown += 1
            note = " (shadowed by a builtin)" if entry.shadowed else ""
            state = f"FAILED: {entry.error}" if entry.error else ("ok" if entry.obj is not None else "not loaded")
            print(f"{kind:11s} {entry.name:30s} {entry.source:30s} {state}{note}")
            print(f"{'':11s} {entry.entry_point}")
            failed += bool(entry.error)
    for plugin in recipe_plugins():
        shown += 1
        state = f"FAILED: {plugin.error}" if plugin.error else "ok"
        print(f"{'recipes':11s} {str(plugin.folder or '-'):30s} {plugin.source:30s} {state}")
        print(f"{'':11s} {plugin.entry_point}")
        failed += bool(plugin.error)
    if not shown:
        print("no plugins installed (or RESTOREKIT_DISABLE_PLUGINS is set)")
    return 1 if args.check and failed else 0
