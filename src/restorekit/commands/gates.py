"""restorekit gates RECIPE [--weights W] [--suite NAME] [--max-images N] [--out DIR]: MSF's gate per task."""

from __future__ import annotations

import argparse
from pathlib import Path

from restorekit.commands.eval import add_weights_arguments
from restorekit.commands.show import add_override_argument
from restorekit.data.build import build_eval_sets
from restorekit.engine.config import eval_config
from restorekit.engine.distributed import pick_device
from restorekit.engine.evaluate import suite_data
from restorekit.engine.gates import GATES_CSV, GATES_MD, GATES_PNG, gate_weights, gates_markdown, write_gate_report
from restorekit.engine.loading import load_model_for_inference
from restorekit.errors import BuildError
from restorekit.io.outputs import check_output_folder, refuse_existing
from restorekit.recipes import load_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a dino_ir recipe (name or YAML path) whose fusion is msf")
    add_weights_arguments(parser)
    add_override_argument(parser)
    parser.add_argument("--suite", metavar="NAME", help="the test tasks of eval.suites.NAME instead of data.val")
    parser.add_argument("--max-images", type=int, metavar="N", help="at most N images per task (default: all)")
    parser.add_argument("--out", default="runs/gates", help="folder for gates.csv, gates.md and gates.png")
    parser.add_argument("--overwrite", action="store_true", help="allow replacing the files in --out")


def run(args: argparse.Namespace) -> int:
    # Imports here keep the CLI's start light (torch loads only for the command that runs).

    if args.max_images is not None and args.max_images < 1:
        raise BuildError(f"--max-images must be >= 1, got {args.max_images}")
    out = Path(args.out)
    check_output_folder(out, "--out")
    if not args.overwrite:
        refuse_existing([out / GATES_CSV, out / GATES_MD, out / GATES_PNG], "--out")
    recipe = load_recipe(args.recipe, args.override)
    cfg = eval_config(recipe, str(args.recipe))
    data_cfg = recipe.get("data") or {}
    if args.suite:
        data_cfg = suite_data(data_cfg, cfg, args.suite, str(args.recipe))
    device = pick_device(args.device)
    model, weights, notes = load_model_for_inference(
        recipe, args.weights, use_ema=not args.no_ema, device=device, verify_weights=not args.no_verify_weights
    )
    gates = gate_weights(model, build_eval_sets(data_cfg), cfg, device, args.max_images)
    note = f"{args.recipe}, weights {weights}" + (f", suite {args.suite}" if args.suite else "")
    print(gates_markdown(gates, note))
    for line in notes:
        print(line)
    paths = write_gate_report(out, gates, note)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
