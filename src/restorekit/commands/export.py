"""restorekit export RECIPE --weights W --format onnx|torch_export [--tile N] [--output PATH] [--tolerance T]."""

from __future__ import annotations

import argparse
from pathlib import Path

from restorekit.commands.eval import add_verify_argument
from restorekit.commands.show import add_override_argument
from restorekit.engine.export import FORMATS, TOLERANCE, ExportError, check_size, export_model
from restorekit.engine.loading import load_model_for_inference
from restorekit.io.outputs import check_output_file
from restorekit.recipes import load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name or YAML path of the weights")
    parser.add_argument(
        "--weights", metavar="W", help="any --weights source of `restorekit eval` (default: the model's own weights)"
    )
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
    add_verify_argument(parser)
    parser.add_argument("--format", required=True, choices=["onnx", "torch_export"], dest="fmt")
    parser.add_argument("--output", metavar="PATH", help="file to write (default: <recipe name>.onnx or .pt2)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest max-absolute difference to the eager model allowed (default 1e-4)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        metavar="N",
        help="a graph for N x N inputs only (any batch): a guided model's windowed guidance pass is traced "
        "exactly (default: any height and width, with one global guidance pass)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_override_argument(parser)


def run(args: argparse.Namespace) -> int:
    tolerance = TOLERANCE if args.tolerance is None else args.tolerance
    if not tolerance >= 0:  # also NaN: a check that nothing passes would fail only after the export
        raise ExportError(
            f"--tolerance must be a number >= 0 (the largest max-absolute difference allowed), got {args.tolerance:g}"
        )
    recipe = load_recipe(args.recipe, args.override)
    stem = str(recipe.get("name") or Path(str(args.recipe)).stem).replace("/", "_")
    output = Path(args.output or f"{stem}{FORMATS[args.fmt]}")
    check_output_file(output, "--output", overwrite=args.overwrite)
    size = None if args.tile is None else check_size((args.tile, args.tile))
    model, weights, notes = load_model_for_inference(
        recipe, args.weights, use_ema=not args.no_ema, verify_weights=not args.no_verify_weights
    )
    for note in notes:
        print(note)
    report = export_model(model, output, args.fmt, tolerance=tolerance, replace=args.overwrite, size=size)
    checks = ", ".join(f"{h}x{w}: {d:.2e}" for (h, w), d in report.differences.items())
    shape = "dynamic height and width" if size is None else f"{size[0]} x {size[1]} inputs"
    print(
        f"exported {weights} to {output} ({args.fmt}, {shape}, {report.seconds:.0f} s); "
        f"max |exported - eager| {checks} (tolerance {tolerance:g})"
    )
    return 0
