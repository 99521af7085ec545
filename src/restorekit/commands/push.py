"""restorekit push RUN REPO_ID [--private] [package options]: package a run and upload it to the Hub."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from restorekit.commands.package import add_package_arguments, write_package
from restorekit.hub import push_package
from restorekit.pretrained import is_package


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder, or a package folder written by `restorekit package`")
    parser.add_argument("repo_id", help="the Hub repository, org/name (created when it does not exist)")
    add_package_arguments(parser)
    parser.add_argument("--private", action="store_true", help="create the repository as private")


def run(args: argparse.Namespace) -> int:
    if is_package(args.run):
        url = push_package(Path(args.run), args.repo_id, private=args.private)
    else:
        with tempfile.TemporaryDirectory(prefix="restorekit-push-") as scratch:
            folder = write_package(args, str(Path(scratch) / "package"), overwrite=False)
            url = push_package(Path(folder), args.repo_id, private=args.private)
    print(f"pushed to {url}")
    return 0
