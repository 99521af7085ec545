"""The photographs that ship with scikit-image, as a dataset with synthetic degradations.

The embedded default data: no download, so the demo, the quality benchmarks and
the robustness probe run anywhere. Gray photographs are replicated to RGB.
The split is fixed: ``TEST_IMAGES`` are never trained on.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F

from restorekit.data.datasets import RestorationDataset
from restorekit.data.degradations import build_degradation
from restorekit.errors import DataError

# name -> (skimage.data function, element of a returned tuple or None)
SAMPLE_IMAGES: dict[str, tuple[str, int | None]] = {
    "astronaut": ("astronaut", None),
    "coffee": ("coffee", None),
    "chelsea": ("chelsea", None),  # skimage.data.cat() is the same photograph
    "rocket": ("rocket", None),
    "hubble_deep_field": ("hubble_deep_field", None),
    "retina": ("retina", None),
    "immunohistochemistry": ("immunohistochemistry", None),
    "motorcycle_left": ("stereo_motorcycle", 0),
    "motorcycle_right": ("stereo_motorcycle", 1),
    "camera": ("camera", None),
    "coins": ("coins", None),
    "moon": ("moon", None),
    "page": ("page", None),
    "text": ("text", None),
    "brick": ("brick", None),
    "grass": ("grass", None),
    "gravel": ("gravel", None),
    "clock": ("clock", None),
    "cell": ("cell", None),
}
TEST_IMAGES: tuple[str, ...] = ("coffee", "chelsea", "camera")
TRAIN_IMAGES: tuple[str, ...] = tuple(n for n in SAMPLE_IMAGES if n not in TEST_IMAGES)
SAMPLE_SPLITS: dict[str, tuple[str, ...]] = {"train": TRAIN_IMAGES, "test": TEST_IMAGES, "all": tuple(SAMPLE_IMAGES)}


def _sample_uint8(name: str) -> np.ndarray:
    if name not in SAMPLE_IMAGES:
        close = difflib.get_close_matches(name, SAMPLE_IMAGES, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise DataError(f"unknown sample image {name!r}{hint} (known: {', '.join(SAMPLE_IMAGES)})")
    function, element = SAMPLE_IMAGES[name]
    image = getattr(skimage.data, function)()
    if element is not None:
        image = image[element]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def load_sample(name: str, max_size: int | None = None) -> torch.Tensor:
    """A sample photograph as (3, H, W) float32 in [0, 1], the long side at most ``max_size``."""
    return _sample_tensor_uint8(name, max_size).float() / 255.0


@lru_cache(maxsize=64)
def _sample_tensor_uint8(name: str, max_size: int | None) -> torch.Tensor:
    """Decoded (and resized) once per process; kept as uint8 so every task shares one copy."""
    image = torch.from_numpy(_sample_uint8(name)).permute(2, 0, 1).contiguous()
    if max_size is not None and max(image.shape[-2:]) > max_size:
        scale = max_size / max(image.shape[-2:])
        size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
        resized = F.interpolate(image[None].float(), size=size, mode="bicubic", antialias=True, align_corners=False)
        image = resized[0].round().clamp(0, 255).to(torch.uint8)
    return image


def _default_task(degradation: Any) -> str:
    if isinstance(degradation, str):
        return degradation
    if isinstance(degradation, dict) and "type" in degradation:
        return str(degradation["type"])
    return "samples"


class SamplesDataset(RestorationDataset):
    """scikit-image photographs of one ``split`` ('train', 'test' or 'all'), degraded on the fly.

    ``images`` picks photographs by name instead of a split; ``max_size`` bounds
    the long side (resized once, with antialiasing).
    """

    def __init__(
        self,
        degradation: Any = "noise",
        split: str = "train",
        task: str | None = None,
        images: str | Sequence[str] | None = None,
        max_size: int | None = None,
        seed: int = 0,
    ) -> None:
        if images is None:
            if split not in SAMPLE_SPLITS:
                raise DataError(f"samples split must be one of {', '.join(SAMPLE_SPLITS)}, got {split!r}")
            images = SAMPLE_SPLITS[split]
        elif isinstance(images, str):
            images = [images]  # `images: coins` means one photograph, not five letters
        elif not isinstance(images, (list, tuple)) or not all(isinstance(n, str) for n in images):
            raise DataError(f"samples 'images' must be a photograph name or a list of names, got {images!r}")
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
            raise DataError(f"samples 'max_size' must be an integer >= 1 or null, got {max_size!r}")
        self.names = list(images)
        for name in self.names:
            if name not in SAMPLE_IMAGES:
                _sample_uint8(name)  # raises the unknown-image error with close matches
        self.degradation = build_degradation(degradation)
        self.task = task or _default_task(degradation)
        self.max_size, self.seed = max_size, seed

    def load(self, index: int) -> tuple[None, torch.Tensor]:
        return None, _sample_tensor_uint8(self.names[index], self.max_size)  # uint8: cropped before conversion
