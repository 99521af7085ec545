"""restorekit app [--weights W ...] [--recipe R] [--port P] [--host 127.0.0.1] [--share]."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from restorekit.app.session import Session, load_models
from restorekit.commands.eval import add_runtime_argument, add_verify_argument
from restorekit.commands.restore import options_from_args, tile_size
from restorekit.commands.show import add_override_argument
from restorekit.errors import RestorekitError

ANALYTICS_VARIABLE = "GRADIO_ANALYTICS_ENABLED"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        metavar="W",
        action="append",
        help="a run folder, checkpoint folder, package folder, Hub id or weights file; repeat it to compare "
        "models (default: the weights --recipe's model loads itself)",
    )
    parser.add_argument("--recipe", help="recipe of weights that carry none (default: the run folder's or package's)")
    add_override_argument(parser)
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
    add_verify_argument(parser)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="as restore's")
    parser.add_argument("--tile", type=tile_size, default="auto", help="initial tile size (pixels, auto or 0)")
    parser.add_argument("--max-memory", metavar="SIZE", help="initial memory budget of --tile auto (8G, 512M)")
    parser.add_argument("--overlap", type=int, default=32, help="initial overlap between tiles, in pixels")
    parser.add_argument("--self-ensemble", action="store_true", help="start with the x8 self-ensemble on")
    add_runtime_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, help="port (default: Gradio's first free one from 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise RestorekitError("restorekit app needs Gradio: pip install 'restorekit[app]'")
    if args.weights is None and args.recipe is None:
        raise RestorekitError("pass --weights W (repeatable), or --recipe R whose model loads its own weights")
    base = replace(options_from_args(args), weights=None)
    choices = [replace(base, weights=w) for w in (args.weights or [None])]
    # Set before Gradio is first imported (it reads the variable then): no analytics, no version check.
    os.environ[ANALYTICS_VARIABLE] = "False"
    from restorekit.app.ui import build_app, launch  # why: the optional extra [app] (Gradio), after the env var

    models = load_models(choices)
    for model in models:
        for note in model.restorer.notes:
            print(f"{model.label}: {note}")
    workdir = Path(tempfile.mkdtemp(prefix="restorekit-app-"))
    try:
        demo = build_app(Session(models, workdir), base)
        print(f"restorekit app: {len(models)} model(s) loaded; Ctrl+C stops it")
        launch(demo, host=args.host, port=args.port, share=args.share, workdir=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
