"""The ``restorekit`` command line: one subcommand per module in ``restorekit.commands``.

Each command module is light at import time (no torch at top level) and exposes
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from restorekit.engine.signals import TrainingInterrupted
from restorekit.errors import RestorekitError

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM})

COMMANDS: dict[str, str] = {
    "list": "restorekit.commands.list_parts",
    "plugins": "restorekit.commands.plugins",
    "show": "restorekit.commands.show",
    "diff": "restorekit.commands.diff",
    "check": "restorekit.commands.check",
    "data": "restorekit.commands.data",
    "init": "restorekit.commands.init",
    "train": "restorekit.commands.train",
    "eval": "restorekit.commands.eval",
    "restore": "restorekit.commands.restore",
    "probe": "restorekit.commands.probe",
    "gates": "restorekit.commands.gates",
    "package": "restorekit.commands.package",
    "push": "restorekit.commands.push",
    "export": "restorekit.commands.export",
    "app": "restorekit.commands.app",
    "report": "restorekit.commands.report",
}


def make_parser() -> argparse.ArgumentParser:
    from restorekit import __version__

    parser = argparse.ArgumentParser(prog="restorekit", description="Compose, train and run image-restoration models.")
    parser.add_argument("--version", action="version", version=f"restorekit {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="also show debug messages")
    loudness.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from restorekit.console import configure

    args = make_parser().parse_args(argv)
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
