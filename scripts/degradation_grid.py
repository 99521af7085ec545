"""Draw every registered degradation on real photographs: docs/images/degradations.png.

    python scripts/degradation_grid.py [--out docs/images/degradations.png] [--size 160]

Rows are scikit-image photographs, columns the clean crop and each degradation
(default parameters unless noted, seed 0), so the picture in
docs/degradations.md is reproducible bit for bit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from restorekit.data.degradations import build_degradation
from restorekit.data.samples import load_sample

PHOTOS = ("astronaut", "rocket")
COLUMNS = (
    ("clean", {"type": "identity"}),
    ("noise sigma 25", {"type": "noise", "sigma": 25}),
    ("noise sigma 50", {"type": "noise", "sigma": 50}),
    ("rain", {"type": "rain"}),
    ("haze", {"type": "haze"}),
    ("motion_blur", {"type": "motion_blur"}),
    ("defocus_blur", {"type": "defocus_blur"}),
    ("low_light", {"type": "low_light"}),
    ("jpeg quality 15", {"type": "jpeg", "quality": 15}),
)


def square_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre square, resized to ``size`` (antialiased) and rounded to 8 bits."""
    side = min(image.shape[-2:])
    top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
    square = image[:, top : top + side, left : left + side]
    small = F.interpolate(square[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]
    return torch.round(small.clamp(0, 1) * 255) / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/degradations.png")
    parser.add_argument("--size", type=int, default=160, help="tile side in pixels")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(PHOTOS), len(COLUMNS)
    dpi = 100
    title = 20  # pixels above the first row
    height = rows * args.size + (rows - 1) * 4 + title
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (args.size + 4) / dpi, height / dpi), dpi=dpi)
    for r, photo in enumerate(PHOTOS):
        clean = square_crop(load_sample(photo), args.size)
        for c, (label, spec) in enumerate(COLUMNS):
            degraded = build_degradation(spec)(clean, rng=0)
            ax = axes[r, c]
            ax.imshow(degraded.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(label, fontsize=8)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - title / height, wspace=0.025, hspace=4 / args.size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
