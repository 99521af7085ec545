"""restorekit package RUN DIR [--no-ema] [--license L] [--citation C] [--eval EVAL_JSON] [--overwrite]."""

from __future__ import annotations

import argparse
from pathlib import Path

from restorekit.pretrained import save_pretrained


def add_package_arguments(parser: argparse.ArgumentParser) -> None:
    """What goes into a package besides the weights; shared with ``push``."""
    parser.add_argument("--no-ema", action="store_true", help="package the raw weights, not their EMA")
    parser.add_argument("--license", help="licence of the weights for the model card (e.g. apache-2.0)")
    parser.add_argument("--citation", help="BibTeX (or a line) to cite these weights by, for the model card")
    parser.add_argument(
        "--eval",
        metavar="EVAL_JSON",
        help="an eval.json (restorekit eval --report DIR) for the card's table "
        "(default: the run's eval/eval.json, if any)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder (its best checkpoint, else the newest)")
    parser.add_argument("folder", help="the package folder to write")
    add_package_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package folder")


def write_package(args: argparse.Namespace, folder: str, overwrite: bool) -> Path:
    return save_pretrained(
        args.run,
        folder,
        use_ema=not args.no_ema,
        license=args.license,
        citation=args.citation,
        evaluation=args.eval,
        overwrite=overwrite,
    )


def run(args: argparse.Namespace) -> int:
    folder = write_package(args, args.folder, args.overwrite)
    print(f"package: {folder} (README.md, recipe.yaml, model.safetensors, restorekit.json)")
    return 0
