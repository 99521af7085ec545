"""restorekit probe: how much do a backbone's (or a body encoder's) features move under degradation?"""

from __future__ import annotations

import argparse

HELP = "feature robustness probe: cosine similarity of clean vs degraded features per layer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--backbone", metavar="SPEC",
        help="backbone name or YAML mapping, e.g. dinov2 or '{type: dinov2, size: s, weights: f.pth}' "
        "(default: dinov2)",
    )
    what.add_argument(
        "--body", metavar="SPEC",
        help="probe a restoration body's encoder instead, e.g. restormer or '{type: restormer, weights: f.pth}'",
    )
    parser.add_argument("--layers", metavar="I,J,...",
                        help="backbone blocks, 0-based (default: about five from first to last)")
    parser.add_argument("--levels", metavar="NAME,...", help="body encoder levels (default: all)")
    parser.add_argument("--images", metavar="NAMES",
                        help="comma-separated scikit-image samples or image files (default: "
                        "astronaut,coffee,chelsea,rocket)")
    parser.add_argument("--size", type=int, default=224,
                        help="square size the images are cropped to (0: native size; default 224)")
    parser.add_argument("--degradations", metavar="SPECS",
                        help="comma-separated names or a YAML list of specs "
                        "(default: noise 15/25/50, rain, haze, motion_blur, low_light)")
    parser.add_argument("--grid", metavar="H,W",
                        help="backbone token grid (default: native resolution, padded to the patch)")
    parser.add_argument("--out", default="runs/probe", help="folder for probe.csv and probe.png")
    parser.add_argument("--overwrite", action="store_true", help="allow replacing probe.csv and probe.png in --out")
    parser.add_argument("--seed", type=int, default=0, help="degradation seed")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    import torch

    from restorekit import probe
    from restorekit.errors import BuildError

    if args.size < 0:  # 0 means native size; a negative size would crash deep in the resize
        raise BuildError(f"--size must be >= 1 (or 0 for the native size), got {args.size}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind, text = ("body", args.body) if args.body else ("backbone", args.backbone or "dinov2")
    misplaced = ["--layers", "--grid"] if kind == "body" else ["--levels"]
    for option in misplaced:
        if getattr(args, option[2:]) is not None:
            raise BuildError(f"{option} does not apply to a {kind} (see restorekit probe --help)")
    spec = probe.parse_spec(text, f"--{kind}")
    grid = probe.parse_int_list(args.grid, "--grid")
    if grid is not None and len(grid) != 2:
        raise BuildError(f"--grid takes H,W, got {args.grid!r}")
    if not args.overwrite:
        from pathlib import Path

        from restorekit.outputs import refuse_existing

        refuse_existing([Path(args.out) / "probe.csv", Path(args.out) / "probe.png"], "--out")
    names = [n.strip() for n in args.images.split(",") if n.strip()] if args.images else list(probe.DEFAULT_IMAGES)
    images = [(name, probe.load_probe_image(name, args.size or None)) for name in names]
    degradations = probe.build_degradations(probe.parse_degradations(args.degradations))
    levels = [n.strip() for n in args.levels.split(",") if n.strip()] if args.levels else None
    result = probe.probe_spec(
        kind, spec, images, degradations,
        layers=probe.parse_int_list(args.layers, "--layers"), levels=levels,
        grid=tuple(grid) if grid else None, seed=args.seed, device=device,
    )
    for note in result.notes:
        print(f"note: {note}")
    print(result.table())
    csv_path, png_path = probe.write_outputs([result], args.out, title=f"{len(images)} images, seed {args.seed}")
    print(f"wrote {csv_path} and {png_path}")
    return 0
