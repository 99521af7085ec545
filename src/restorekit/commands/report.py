"""restorekit report RUN... [-o report.html] [--overwrite] [--crop PX] [--images N]."""

from __future__ import annotations

import argparse
from pathlib import Path

from restorekit.errors import RecipeError
from restorekit.io.outputs import check_output_file
from restorekit.report.render import write_report
from restorekit.report.runs import read_runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders; the first is the one the others are compared to"
    )
    parser.add_argument(
        "-o", "--output", default="report.html", help="the HTML file (the markdown twin: same name, .md)"
    )
    parser.add_argument("--overwrite", action="store_true", help="allow replacing an existing report")
    parser.add_argument("--crop", type=int, default=96, help="side of the crop shown of each restored image, in pixels")
    parser.add_argument("--images", type=int, default=4, help="restored test images shown per run (eval/outputs)")


def run(args: argparse.Namespace) -> int:
    html_file = Path(args.output)
    if html_file.suffix.lower() not in (".html", ".htm"):
        raise RecipeError(f"-o {html_file}: give an .html file name (the markdown twin goes beside it as .md)")
    if args.crop < 8 or args.images < 1:
        raise RecipeError(f"--crop must be >= 8 and --images >= 1, got {args.crop} and {args.images}")
    for file in (html_file, html_file.with_suffix(".md")):
        check_output_file(file, "-o", overwrite=args.overwrite)
    runs = read_runs(args.runs)
    html, md = write_report(runs, html_file, overwrite=args.overwrite, crop=args.crop, max_images=args.images)
    print(f"wrote {html} and {md} ({len(runs)} runs)")
    return 0
