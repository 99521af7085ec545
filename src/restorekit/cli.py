"""The ``restorekit`` command line: one subcommand per module in ``restorekit.commands``.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and
imports what it needs at its top; its one-line help lives in :data:`COMMANDS`. Only
the command being run is imported (by name, through ``importlib``), so
``restorekit --help`` and ``restorekit list`` never import torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from restorekit.console import configure
from restorekit.errors import RestorekitError, TrainingInterrupted
from restorekit.version import __version__

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM})

COMMANDS: dict[str, tuple[str, str]] = {
    "list": (
        "restorekit.commands.list_parts",
        "list registered parts (name, kind, source), or recipes with KIND=recipes",
    ),
    "plugins": (
        "restorekit.commands.plugins",
        "list plugin parts from entry points; --check imports them all",
    ),
    "show": (
        "restorekit.commands.show",
        "print a recipe fully resolved (base chain and overrides applied)",
    ),
    "diff": (
        "restorekit.commands.diff",
        "print the dotted keys whose values differ between two resolved recipes",
    ),
    "check": (
        "restorekit.commands.check",
        "check a recipe: list every problem (keys, types, parts, data folders, published numbers); exit 1 if any",
    ),
    "data": (
        "restorekit.commands.data",
        "prepare downloaded datasets (data prepare) and inspect a recipe's data section (data check)",
    ),
    "init": (
        "restorekit.commands.init",
        "write a recipe that trains on your own folder of (degraded, clean) pairs, with a held-out split",
    ),
    "train": (
        "restorekit.commands.train",
        "train a recipe (iteration-based; resumable; multi-GPU when launched with torchrun)",
    ),
    "submit": (
        "restorekit.commands.submit",
        "submit a training run to SLURM through submitit, requeued on pre-emption (needs the extra restorekit[submitit])",
    ),
    "eval": (
        "restorekit.commands.eval",
        "score trained weights per task on the recipe's test data (PSNR/SSIM, input vs restored)",
    ),
    "restore": (
        "restorekit.commands.restore",
        "restore an image file or a folder of images with trained weights (tiled for large images)",
    ),
    "probe": (
        "restorekit.commands.probe",
        "feature robustness probe: cosine similarity of clean vs degraded features per layer",
    ),
    "gates": (
        "restorekit.commands.gates",
        "MSF's gate weights per task over the recipe's test images: a table and a plot",
    ),
    "package": (
        "restorekit.commands.package",
        "write a pretrained package (recipe, trainable weights, model card) of a run's best weights",
    ),
    "push": (
        "restorekit.commands.push",
        "package a run (or take a package folder) and upload it to a Hugging Face Hub repository",
    ),
    "export": (
        "restorekit.commands.export",
        "export trained weights to ONNX or torch.export with dynamic height and width, checked against eager",
    ),
    "app": (
        "restorekit.commands.app",
        "restore images in the browser with one or more trained models (needs the extra restorekit[app])",
    ),
    "report": (
        "restorekit.commands.report",
        "compare run folders in one self-contained HTML page (and a markdown twin): recipes, scores, curves, crops",
    ),
}


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; only ``command``'s module is imported, to add its arguments."""
    parser = argparse.ArgumentParser(prog="restorekit", description="Compose, train and run image-restoration models.")
    parser.add_argument("--version", action="version", version=f"restorekit {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="also show debug messages")
    loudness.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)  # the lazy subcommand: imported when run
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_run=module.run)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the top level has no valued options)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser(command_of(argv)).parse_args(argv)
    configure(1 if args.verbose else -1 if args.quiet else 0)
    try:
        return int(args._run(args) or 0)
    except TrainingInterrupted as exc:
        print(f"restorekit {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except RestorekitError as exc:
        print(f"restorekit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        # A full or read-only disk is the user's to fix: say which file, not a traceback.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"restorekit {args.command}: error: {exc.strerror}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"restorekit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
