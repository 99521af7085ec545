"""restorekit restore INPUT OUTPUT --weights W [--recipe R] [--tile T --overlap O] [--overwrite]."""

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
    parser.add_argument("--tile", type=int, default=512,
                        help="tile size for images larger than it (0: always the whole image)")
    parser.add_argument("--overlap", type=int, default=32, help="overlap between tiles, in pixels")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow replacing existing files, the input itself included")


def run(args: argparse.Namespace) -> int:
    from restorekit.engine.distributed import pick_device
    from restorekit.engine.loading import load_model_for_inference, recipe_for_weights
    from restorekit.engine.infer import inference_amp, plan_outputs, restore_files

    from restorekit.errors import RecipeError

    if args.tile < 0:
        raise RecipeError(f"--tile must be >= 0 (0: always the whole image), got {args.tile}")
    if args.tile and not 0 <= args.overlap < args.tile:
        raise RecipeError(f"--overlap ({args.overlap}) must be >= 0 and smaller than --tile ({args.tile})")
    pairs = plan_outputs(args.input, args.output, overwrite=args.overwrite)
    recipe = recipe_for_weights(args.weights, args.recipe, args.override)
    device = pick_device(args.device)
    model, weights, notes = load_model_for_inference(recipe, args.weights, use_ema=not args.no_ema, device=device)
    for note in notes:
        print(note)
    if args.self_ensemble:
        from restorekit.engine.ensemble import SelfEnsemble

        model = SelfEnsemble(model)
    restore_files(model, pairs, tile=args.tile or None, overlap=args.overlap, device=device,
                  amp=inference_amp(args.precision, recipe, device))
    print(f"restored {len(pairs)} image(s) with {weights}")
    return 0
