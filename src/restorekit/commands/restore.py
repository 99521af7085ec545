"""restorekit restore INPUT OUTPUT --weights W [--recipe R] [--tile T|auto --max-memory M --overlap O] [--overwrite]."""

from __future__ import annotations

import argparse

from restorekit.commands.eval import add_weights_arguments
from restorekit.commands.show import add_override_argument

HELP = "restore an image file or a folder of images with trained weights (tiled for large images)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="an image file or a folder of images")
    parser.add_argument("output", help="output file (or folder, for a folder input or an existing folder)")
    add_weights_arguments(parser)
    parser.add_argument("--recipe", help="recipe of the weights (default: the run folder's recipe.yaml)")
    add_override_argument(parser)
    parser.add_argument(
        "--tile",
        type=tile_size,
        default="auto",
        help="tile size in pixels for images larger than it; auto (default): the largest "
        "tile that fits --max-memory; 0: always the whole image",
    )
    parser.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="memory budget of --tile auto, e.g. 8G or 512M: what the process holds with the "
        "model loaded (its RAM on the CPU, torch's GPU memory on CUDA) plus the restore's "
        "tensors (default: that plus 80%% of the free RAM, or 90%% of the free GPU memory)",
    )
    parser.add_argument("--overlap", type=int, default=32, help="overlap between tiles, in pixels")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar over the tiles")
    parser.add_argument(
        "--overwrite", action="store_true", help="allow replacing existing files, the input itself included"
    )


def tile_size(text: str) -> int | str:
    """``auto`` or a number of pixels (argparse type of ``--tile``; ``run`` checks the sign)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tile takes a number of pixels or auto, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from restorekit.engine.distributed import pick_device
    from restorekit.engine.infer import inference_amp, plan_outputs, restore_files
    from restorekit.engine.loading import load_model_for_inference, recipe_for_weights
    from restorekit.engine.memory import parse_memory
    from restorekit.errors import RecipeError

    if args.tile != "auto" and args.tile < 0:
        raise RecipeError(f"--tile must be >= 0 (0: always the whole image), got {args.tile}")
    if args.overlap < 0 or (args.tile not in (0, "auto") and args.overlap >= args.tile):
        raise RecipeError(f"--overlap ({args.overlap}) must be >= 0 and smaller than --tile ({args.tile})")
    if args.max_memory is not None and args.tile != "auto":
        raise RecipeError(f"--max-memory sets the tile size; it does not apply with --tile {args.tile}")
    max_memory = None if args.max_memory is None else parse_memory(args.max_memory)
    pairs = plan_outputs(args.input, args.output, overwrite=args.overwrite)
    recipe = recipe_for_weights(args.weights, args.recipe, args.override)
    device = pick_device(args.device)
    model, weights, notes = load_model_for_inference(
        recipe, args.weights, use_ema=not args.no_ema, device=device, verify_weights=not args.no_verify_weights
    )
    for note in notes:
        print(note)
    if args.self_ensemble:
        from restorekit.engine.ensemble import SelfEnsemble

        model = SelfEnsemble(model)
    restore_files(
        model,
        pairs,
        tile=args.tile or None,
        overlap=args.overlap,
        device=device,
        amp=inference_amp(args.precision, recipe, device),
        max_memory=max_memory,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(f"restored {len(pairs)} image(s) with {weights}")
    return 0
