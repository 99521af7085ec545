"""restorekit probe: how much do a backbone's (or a body encoder's) features move under degradation?"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from restorekit import probe
from restorekit.building import build
from restorekit.contracts import is_pretrained
from restorekit.errors import BuildError
from restorekit.io.outputs import refuse_existing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--backbone",
        metavar="SPEC",
        help="backbone name or YAML mapping, e.g. dinov2 or '{type: dinov2, size: s, weights: f.pth}' "
        "(default: dinov2)",
    )
    what.add_argument(
        "--body",
        metavar="SPEC",
        help="probe a restoration body's encoder instead, e.g. restormer or '{type: restormer, weights: f.pth}'",
    )
    parser.add_argument(
        "--layers",
        metavar="I,J,...",
        help="backbone blocks, 0-based, or 'all' (default: about five from first to last)",
    )
    parser.add_argument(
        "--metric",
        default="cosine",
        choices=["cosine", "l1"],
        help="cosine: token cosine similarity (1: unmoved); l1: DPC's distance, mean |clean - degraded| / "
        "mean |clean| (0: indistinguishable); with --layers all it shows which blocks tell clean from degraded",
    )
    parser.add_argument("--levels", metavar="NAME,...", help="body encoder levels (default: all)")
    parser.add_argument(
        "--images",
        metavar="NAMES",
        help="comma-separated scikit-image samples or image files (default: astronaut,coffee,chelsea,rocket)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="square size the images are cropped to (0: native size; default 224, native with --compare-rules)",
    )
    parser.add_argument(
        "--degradations",
        metavar="SPECS",
        help="comma-separated names or a YAML list of specs "
        "(default: noise 15/25/50, rain, haze, motion_blur, low_light)",
    )
    parser.add_argument(
        "--grid", metavar="H,W", help="backbone token grid (default: native resolution, padded to the patch)"
    )
    rules = parser.add_argument_group("comparing guide pass rules (instead of degradations)")
    rules.add_argument(
        "--compare-rules",
        metavar="RULES",
        help="windowed,budget: per layer, the cosine similarity of each rule's guide to the "
        "global pass on the clean images, taken at their own size unless --size is given",
    )
    rules.add_argument("--guide-stride", type=int, default=8, help="guide stride (default 8)")
    rules.add_argument("--guide-window", type=int, help="tokens a side of a window (default 37)")
    rules.add_argument("--guide-overlap", type=int, help="tokens windows share at least (default 3)")
    parser.add_argument("--out", default="runs/probe", help="folder for probe.csv and probe.png")
    parser.add_argument("--overwrite", action="store_true", help="allow replacing probe.csv and probe.png in --out")
    parser.add_argument("--seed", type=int, default=0, help="degradation seed")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    size = args.size if args.size is not None else (0 if args.compare_rules else 224)
    if size < 0:  # 0 means native size; a negative size would crash deep in the resize
        raise BuildError(f"--size must be >= 1 (or 0 for the native size), got {size}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind, text = ("body", args.body) if args.body else ("backbone", args.backbone or "dinov2")
    misplaced = ["--layers", "--grid"] if kind == "body" else ["--levels"]
    if args.compare_rules:
        misplaced = ["--body", "--grid", "--levels", "--degradations"]
        if args.metric != "cosine":
            raise BuildError("--metric does not apply to --compare-rules (it measures cosine similarity)")
    for option in misplaced:
        if getattr(args, option[2:]) is not None:
            what = "--compare-rules" if args.compare_rules else f"a {kind}"
            raise BuildError(f"{option} does not apply to {what} (see restorekit probe --help)")
    spec = probe.parse_spec(text, f"--{kind}")
    grid = probe.parse_int_list(args.grid, "--grid")
    if grid is not None and len(grid) != 2:
        raise BuildError(f"--grid takes H,W, got {args.grid!r}")
    if not args.overwrite:
        refuse_existing([Path(args.out) / "probe.csv", Path(args.out) / "probe.png"], "--out")
    names = [n.strip() for n in args.images.split(",") if n.strip()] if args.images else list(probe.DEFAULT_IMAGES)
    images = [(name, probe.load_probe_image(name, size or None)) for name in names]
    if args.compare_rules:
        return _compare_rules(args, spec, images, device)
    degradations = probe.build_degradations(probe.parse_degradations(args.degradations))
    levels = [n.strip() for n in args.levels.split(",") if n.strip()] if args.levels else None
    result = probe.probe_spec(
        kind,
        spec,
        images,
        degradations,
        layers=probe.parse_layers(args.layers),
        levels=levels,
        grid=tuple(grid) if grid else None,
        seed=args.seed,
        device=device,
        metric=args.metric,
    )
    for note in result.notes:
        print(f"note: {note}")
    print(result.table())
    csv_path, png_path = probe.write_outputs([result], args.out, title=f"{len(images)} images, seed {args.seed}")
    print(f"wrote {csv_path} and {png_path}")
    return 0


def _compare_rules(args: argparse.Namespace, spec: object, images: list, device: str) -> int:
    """``--compare-rules``: each rule's guide against the global pass, per layer."""
    backbone = build("backbone", spec).to(device).eval()
    rules = [r.strip() for r in args.compare_rules.split(",") if r.strip()]
    result = probe.compare_rules(backbone, images, rules, layers=probe.parse_int_list(args.layers, "--layers"),
                                 stride=args.guide_stride, window=args.guide_window, overlap=args.guide_overlap,
                                 extractor=probe.spec_label(spec), device=device)  # fmt: skip
    if not is_pretrained(backbone):
        print(
            "note: randomly initialised backbone (no weights given): the numbers say nothing about the pretrained model"
        )
    print(result.table())
    csv_path, png_path = probe.write_outputs([result], args.out, title=f"{len(images)} images at their own size")
    print(f"wrote {csv_path} and {png_path}")
    return 0
