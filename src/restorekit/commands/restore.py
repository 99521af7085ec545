"""restorekit restore INPUT OUTPUT --weights W [--recipe R] [--tile T|auto --max-memory M --overlap O]
[--runtime eager|onnxruntime|auto] [--overwrite]."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from restorekit.commands.eval import add_weights_arguments
from restorekit.commands.show import add_override_argument
from restorekit.engine.infer import plan_outputs
from restorekit.engine.restoring import RestoreOptions, load_restorer

if TYPE_CHECKING:  # the command module stays light: no torch at import
    from restorekit.engine.restoring import RestoreOptions


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


def options_from_args(args: argparse.Namespace) -> RestoreOptions:
    """The restore options of ``args`` (``restorekit app`` builds the same value from its own flags)."""
    return RestoreOptions(
        weights=args.weights,
        recipe=args.recipe,
        overrides=tuple(args.override or ()),
        device=args.device,
        precision=args.precision,
        use_ema=not args.no_ema,
        verify_weights=not args.no_verify_weights,
        self_ensemble=args.self_ensemble,
        tile=args.tile,
        overlap=args.overlap,
        max_memory=args.max_memory,
        runtime=args.runtime,
    ).checked()


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    pairs = plan_outputs(args.input, args.output, overwrite=args.overwrite)
    restorer = load_restorer(options)
    for note in restorer.notes:
        print(note)
    restorer.restore(pairs, options, progress=not args.no_progress, overwrite=args.overwrite)
    print(f"restored {len(pairs)} image(s) with {restorer.weights}")
    return 0
