"""restorekit eval RECIPE --weights W [-o k=v ...] [--suite NAME] [--save-outputs DIR] [--no-ema] [--report DIR]."""

from __future__ import annotations

import argparse
from pathlib import Path

from restorekit.commands.show import add_override_argument
from restorekit.data.build import build_eval_sets
from restorekit.engine.config import eval_config
from restorekit.engine.distributed import pick_device
from restorekit.engine.evaluate import (
    REPORT_JSON,
    REPORT_MD,
    evaluate,
    markdown_table,
    metric_directions,
    protocol,
    suite_data,
    write_report,
)
from restorekit.engine.infer import inference_amp
from restorekit.engine.loading import load_model_for_inference
from restorekit.engine.runtime import RUNTIMES, select_runtime
from restorekit.engine.validate import validate
from restorekit.io.outputs import check_output_folder, refuse_existing, refuse_non_empty
from restorekit.published import published_differences, published_tables
from restorekit.recipes import recipe_locations, resolve_recipe


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights``, ``--no-ema``, ``--device``, ``--precision``, ``--self-ensemble`` and ``--runtime``,
    shared with ``restore``."""
    parser.add_argument(
        "--weights",
        metavar="W",
        help="a run folder (its best checkpoint, else the newest), a checkpoint folder, a package folder, "
        "a Hub id (org/name), a .safetensors file, or a released Restormer .pth / PromptIR, AdaIR or MoCE-IR .ckpt "
        "(default: the weights the recipe's model loads itself, -o model.weights=FILE)",
    )
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
    add_verify_argument(parser)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp32"],
        help="auto: as the recipe trained (train.amp; bf16 on CUDA unless it is off), fp32 on the CPU",
    )
    parser.add_argument(
        "--self-ensemble",
        action="store_true",
        help="x8 self-ensemble: average the model over the 8 flips and rotations (8x slower)",
    )
    add_runtime_argument(parser)


def add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    """``--runtime``, shared with ``restore`` (through :func:`add_weights_arguments`) and ``app``."""
    parser.add_argument(
        "--runtime",
        default="eager",
        choices=RUNTIMES,
        help="what runs the model: eager PyTorch (default), ONNX Runtime (the model exported once per "
        "weights and size, cached in $RESTOREKIT_CACHE or ~/.cache/restorekit; pip install "
        "'restorekit[export]'), or auto: ONNX Runtime on the CPU when installed and the model exports",
    )


def add_verify_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-verify-weights``, shared with ``restore`` and ``export``."""
    parser.add_argument(
        "--no-verify-weights",
        action="store_true",
        help="load a package's weights even when they no longer match the sha256 its manifest records "
        "(weights edited on purpose)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name or YAML path (its data section names the test sets)")
    add_weights_arguments(parser)
    add_override_argument(parser)
    parser.add_argument(
        "--suite",
        metavar="NAME",
        help="score the test tasks of eval.suites.NAME (e.g. unseen) instead of data.val",
    )
    parser.add_argument("--save-outputs", metavar="DIR", help="write restored test images to DIR/<task>/")
    parser.add_argument("--report", metavar="DIR", help="write eval.md and eval.json to DIR")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow replacing eval.md/eval.json in --report DIR and files in --save-outputs DIR",
    )
    parser.add_argument(
        "--no-published",
        action="store_true",
        help="do not print the recipe's published numbers beside the measured ones",
    )


def run(args: argparse.Namespace) -> int:
    if args.report:
        check_output_folder(Path(args.report), "--report")
        if not args.overwrite:
            refuse_existing([Path(args.report) / REPORT_MD, Path(args.report) / REPORT_JSON], "--report")
    if args.save_outputs:
        check_output_folder(Path(args.save_outputs), "--save-outputs")
        if not args.overwrite:
            refuse_non_empty(Path(args.save_outputs), "--save-outputs")
    overrides = args.override + (["eval.self_ensemble=true"] if args.self_ensemble else [])
    recipe = resolve_recipe(args.recipe, overrides)
    validate(recipe, str(args.recipe), locations=recipe_locations(args.recipe, overrides), train=False, data=("val",))
    cfg = eval_config(recipe, str(args.recipe))
    data_cfg = recipe.get("data") or {}
    if args.suite:  # checked before the model loads
        data_cfg = suite_data(data_cfg, cfg, args.suite, str(args.recipe))
    device = pick_device(args.device)
    model, weights, notes = load_model_for_inference(
        recipe, args.weights, use_ema=not args.no_ema, device=device, verify_weights=not args.no_verify_weights
    )
    sets = build_eval_sets(data_cfg)
    restorer, runtime = select_runtime(args.runtime, model, recipe["model"], device)
    print(runtime)
    result = evaluate(
        restorer,
        sets,
        cfg,
        device,
        amp=inference_amp(args.precision, recipe, device),
        save_dir=Path(args.save_outputs) if args.save_outputs else None,
    )
    info = {**protocol(cfg), "weights": str(weights), **({"suite": args.suite} if args.suite else {})}
    published = None if args.no_published or args.suite else recipe.get("published")
    directions = metric_directions(cfg)
    comparison = published_tables(result, published, directions)
    print(markdown_table(result, info))
    if comparison:
        print("\n" + comparison)
    for note in notes:
        print(note)
    if args.report:
        write_report(
            Path(args.report),
            result,
            info,
            appendix=comparison,
            notes=notes,
            published=published_differences(result, published, directions),
        )
        print(f"report: {Path(args.report) / REPORT_MD}, {Path(args.report) / REPORT_JSON}")
    return 0
