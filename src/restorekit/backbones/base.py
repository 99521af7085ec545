"""FeatureBackbone: the frozen feature extractor every guidance backbone is.

The base class owns what all backbones share, so the subclasses only say how to
build their network and how to run its first blocks:

* freezing (``frozen=True``: eval mode even when the owner trains, no parameter
  requires grad, recorded in checkpoints by name, weights and sha256);
* the input side: ``x`` in [0, 1] -> mean/std normalisation -> either a resize
  so the token grid is exactly the requested ``grid`` or a pad to a multiple of
  the patch at native resolution (models that take any input size), or a resize
  to the fixed input size with the output maps resized to the grid (models with
  a fixed size, e.g. open_clip towers);
* layer validation and the optional CUDA autocast (bf16) knob.

Gradients flow from the maps back to ``x`` (the DPC loss needs that); frozen
weights never receive any because they do not require grad.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from restorekit.errors import BuildError
from restorekit.io.weight_files import file_sha256

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype a ``dtype:`` knob names (None: full precision)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise BuildError(f"backbone dtype {dtype!r} is not supported; use one of {sorted(_DTYPES)} or null") from None


def token_grid(size: tuple[int, int], patch: int) -> tuple[int, int]:
    """Token grid of an image of ``size`` padded to a multiple of ``patch``."""
    return -(-size[0] // patch), -(-size[1] // patch)  # integer ceil: exact, and traceable


def pad_to_multiple(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Zero-pad (bottom/right) to a multiple of ``patch``; applied after normalisation,
    so the padding is the dataset mean colour, as timm's ``dynamic_img_pad`` does."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % patch, (-w) % patch
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def check_grid(grid: Any) -> tuple[int, int] | None:
    """``grid`` as a pair of positive ints (or None)."""
    if grid is None:
        return None
    if isinstance(grid, int):
        grid = (grid, grid)
    try:  # a symbolic size (torch.export) stays symbolic: int() would bake the example's in
        h, w = (g if isinstance(g, torch.SymInt) else int(g) for g in grid)
    except (TypeError, ValueError):
        raise BuildError(f"grid must be (h, w) or None, got {grid!r}") from None
    if h < 1 or w < 1:
        raise BuildError(f"grid must be positive, got {grid!r}")
    return h, w


class FeatureBackbone(nn.Module):
    """Base of every backbone: ``forward(x, layers, grid) -> {layer: (B, C, h, w)}``.

    Subclasses build their network, set ``embed_dim``, ``num_layers``,
    ``patch_size`` and ``fixed_input_size`` (None for any-size models), then call
    :meth:`_finish_init`; they implement :meth:`_extract`.
    """

    embed_dim: int
    num_layers: int
    patch_size: int
    fixed_input_size: tuple[int, int] | None = None

    def __init__(
        self,
        *,
        name: str,
        frozen: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        dtype: str | torch.dtype | None = None,
        antialias: bool = False,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise BuildError(f"mean and std need 3 values each, got mean={mean!r} std={std!r}")
        self.name = name
        self.frozen = bool(frozen)
        self.autocast_dtype = resolve_dtype(dtype)
        self.antialias = bool(antialias)
        # Not persistent: they are configuration, not weights (keeps state dicts clean).
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.weights: str | None = None  # what the weights came from (path, hub tag) or None
        self.weights_file: str | None = None  # the file whose sha256 identifies them
        self._sha256: str | None = None

    # -- freezing -------------------------------------------------------------------
    def _finish_init(self) -> None:
        """Apply the frozen state once the network exists."""
        if self.frozen:
            self.requires_grad_(False)
            super().train(False)

    def train(self, mode: bool = True) -> FeatureBackbone:
        """A frozen backbone stays in eval mode whatever its owner does."""
        return super().train(bool(mode) and not self.frozen)

    # -- metadata -------------------------------------------------------------------
    def weights_record(self) -> dict[str, Any]:
        """``{"name", "weights", "sha256"}``: how a run records this frozen part."""
        if self._sha256 is None and self.weights_file is not None:
            self._sha256 = file_sha256(self.weights_file)
        return {"name": self.name, "weights": self.weights, "sha256": self._sha256}

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, weights={self.weights!r}, frozen={self.frozen}, "
            f"embed_dim={self.embed_dim}, num_layers={self.num_layers}, patch_size={self.patch_size}"
        )

    # -- forward --------------------------------------------------------------------
    def resolve_layers(self, layers: Sequence[int] | int) -> list[int]:
        """0-based block indices (negative ones count from the end), validated."""
        if isinstance(layers, int):
            layers = [layers]
        out = []
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise BuildError(f"{self.name}: layer indices must be ints, got {layer!r}")
            index = layer + self.num_layers if layer < 0 else layer
            if not 0 <= index < self.num_layers:
                raise BuildError(
                    f"{self.name}: layer {layer} does not exist; the model has "
                    f"{self.num_layers} blocks (0..{self.num_layers - 1})"
                )
            out.append(index)
        if not out:
            raise BuildError(f"{self.name}: no layers requested")
        return out

    def output_grid(self, size: tuple[int, int], grid: tuple[int, int] | None) -> tuple[int, int]:
        """The token grid ``forward`` returns for an input of ``size``."""
        return grid if grid is not None else token_grid(size, self.patch_size)

    def forward(
        self, x: torch.Tensor, layers: Sequence[int] | int, grid: tuple[int, int] | None = None
    ) -> dict[int, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        grid = check_grid(grid)
        wanted = list(layers) if not isinstance(layers, int) else [layers]
        indices = self.resolve_layers(wanted)
        out_grid = self.output_grid((x.shape[-2], x.shape[-1]), grid)
        z = self._prepare(x, grid)
        weight = next(self.parameters(), None)
        if weight is not None and weight.is_floating_point() and weight.dtype != z.dtype:
            z = z.to(weight.dtype)  # weights cast with .to(bf16) take fp32 images, as the bodies do
        unique = sorted(set(indices))
        # dtype unset: inherit the caller's autocast (the engine's bf16 on CUDA); set: force it.
        own_autocast = (
            torch.autocast("cuda", dtype=self.autocast_dtype)
            if self.autocast_dtype is not None and z.is_cuda
            else contextlib.nullcontext()
        )
        with own_autocast:
            maps = self._extract(z, unique)
        by_index = {}
        for index, fmap in zip(unique, maps):
            if tuple(fmap.shape[-2:]) != out_grid:
                fmap = F.interpolate(fmap, size=out_grid, mode="bilinear", align_corners=False)
            by_index[index] = fmap.to(x.dtype) if fmap.dtype != x.dtype else fmap
        return {layer: by_index[index] for layer, index in zip(wanted, indices)}

    def _prepare(self, x: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        """Normalise and bring ``x`` to the size the network runs at."""
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        std = self.std.to(device=x.device, dtype=x.dtype)
        z = (x - mean) / std
        if self.fixed_input_size is not None:
            target = self.fixed_input_size
        elif grid is not None:
            target = (grid[0] * self.patch_size, grid[1] * self.patch_size)
        else:
            return pad_to_multiple(z, self.patch_size)
        if tuple(z.shape[-2:]) != tuple(target):
            z = F.interpolate(z, size=target, mode="bilinear", align_corners=False, antialias=self.antialias)
        return z

    def _extract(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        """NCHW token maps of the sorted block ``indices``, running no deeper block."""
        raise NotImplementedError
