"""The paper's motivating experiment: DINOv2 vs CLIP vs a restoration body's encoder.

    python benchmarks/robustness_probe.py \\
        --backbone '{type: dinov2, size: b, weights: /path/dinov2_vitb14_pretrain.pth}' \\
        --backbone '{type: clip, weights: /path/open_clip_model.safetensors, quick_gelu: true}' \\
        --body '{type: restormer, weights: /path/restormer_trained.pth}' \\
        [--images astronaut,coffee,chelsea,rocket] [--size 224] [--degradations ...] [--out DIR]

For every extractor, every image and every degradation (noise sigma 15/25/50,
rain, haze, motion blur, low light by default) it measures the per-layer cosine
similarity of clean versus degraded token features (``restorekit.probe``), prints
one table per extractor and writes ``robustness_probe.csv`` (all rows),
``robustness_probe.png`` (one panel per extractor) and ``robustness_probe.json``
(the mean tables and the environment) to ``--out`` (default ``$OUT`` or
``benchmarks/out``). With no extractor named it compares ``dinov2``, ``clip`` and
the ``restormer`` encoder, randomly initialised unless weights are given in the
specs. ``--tiny`` shrinks every extractor to a few narrow blocks (a CPU smoke run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    environment,
    out_dir,
    resolve_device,
    tiny_backbone_spec,
    tiny_spec,
    write_json,
)

from restorekit import probe  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backbone", action="append", default=[], metavar="SPEC", help="backbone name or YAML mapping (repeatable)"
    )
    parser.add_argument(
        "--body",
        action="append",
        default=[],
        metavar="SPEC",
        help="restoration body whose encoder to probe (repeatable)",
    )
    parser.add_argument("--layers", help="backbone blocks, comma-separated (default: about five)")
    parser.add_argument("--images", help="comma-separated scikit-image samples or files")
    parser.add_argument("--size", type=int, default=224, help="square crop size (0: native)")
    parser.add_argument("--degradations", help="comma-separated names or a YAML list of specs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    parser.add_argument("--tiny", action="store_true", help="tiny extractors (CPU smoke run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    layers = probe.parse_int_list(args.layers, "--layers")
    extractors = [("backbone", probe.parse_spec(s, "--backbone")) for s in args.backbone]
    extractors += [("body", probe.parse_spec(s, "--body")) for s in args.body]
    if not extractors:
        extractors = [("backbone", "dinov2"), ("backbone", "clip"), ("body", "restormer")]
    if args.tiny:
        depth = max(4, max(layers or [3]) + 1)
        extractors = [
            (kind, tiny_backbone_spec(spec, depth) if kind == "backbone" else tiny_spec("body", spec, "restormer"))
            for kind, spec in extractors
        ]
    names = [n.strip() for n in args.images.split(",") if n.strip()] if args.images else list(probe.DEFAULT_IMAGES)
    images = [(name, probe.load_probe_image(name, args.size or None)) for name in names]
    degradations = probe.build_degradations(probe.parse_degradations(args.degradations))

    results = []
    for kind, spec in extractors:
        result = probe.probe_spec(kind, spec, images, degradations, layers=layers, seed=args.seed, device=device)
        for note in result.notes:
            print(f"note ({result.extractor}): {note}")
        print(result.table(), end="\n\n")
        results.append(result)

    folder = out_dir(args.out)
    csv_path, png_path = probe.write_outputs(
        results, folder, stem="robustness_probe", title=f"feature robustness: {len(images)} images, seed {args.seed}"
    )
    summary = {
        "environment": environment(device, "fp32"),
        "images": names,
        "size": args.size,
        "seed": args.seed,
        "results": [
            {
                "extractor": r.extractor,
                "layers": r.layers,
                "degradations": r.degradations,
                "mean_cosine": r.mean().round(6).tolist(),
                "notes": r.notes,
            }
            for r in results
        ],
    }
    write_json(folder / "robustness_probe.json", summary)
    print(f"wrote {csv_path}, {png_path} and {folder / 'robustness_probe.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
