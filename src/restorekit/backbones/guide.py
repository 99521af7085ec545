"""How a guide pass lays a backbone over an image (shared by DINO-IR and DPC).

Two independent choices make a guide pass, and :class:`GuidePass` holds both, so
the model's pass and the DPC loss's passes follow one rule:

* the **grid** the guide is delivered on: ``stride`` (``ceil(H/stride) x
  ceil(W/stride)`` tokens, each covering the pixels of one body feature cell) or
  ``native`` (the backbone's own patch grid: the image padded to a multiple of the
  patch);
* the **pass rule**, how the backbone covers a grid larger than ``window x window``
  tokens (a grid that fits is always one global pass, so training crops never change):

  - ``global``: one pass over the whole grid; attention is quadratic in the tokens;
  - ``windowed``: overlapping windows of at most ``window x window`` tokens, each
    sharing at least ``overlap`` tokens with its neighbours, spread evenly; each window
    is one pass, and the maps are blended with linear ramps across the overlaps that
    form a partition of unity. Cost is linear in pixels;
  - ``budget``: one pass on the image resized so its grid fits in ``window x window``
    tokens (aspect kept); the maps are resized back to the grid. Cost is constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restorekit.backbones.base import FeatureBackbone
from restorekit.errors import BuildError
from restorekit.io.padding import pad_to_multiple

GRID_RULES = ("stride", "native")
PASS_RULES = ("global", "windowed", "budget")
DEFAULT_GUIDE_BACKBONE: dict[str, Any] = {"type": "dinov2", "size": "b"}
DEFAULT_PASS_RULE = "windowed"
DEFAULT_WINDOW = 37  # DINOv2's pretraining grid: 518 px at patch 14
DEFAULT_OVERLAP = 3
WINDOWS_PER_CALL = 16  # windows batched into one backbone call (bounds the activations)

Span = tuple[int, int]  # (start, size) along one axis, in tokens


def stride_grid(height: int, width: int, stride: int) -> tuple[int, int]:
    """The token grid ``(ceil(H/stride), ceil(W/stride))`` (integer division: exact, and traceable)."""
    return -(-height // stride), -(-width // stride)


def token_grid(rule: str, height: int, width: int, stride: int) -> tuple[int, int] | None:
    """The grid ``rule`` gives an input of ``height x width`` (None: the backbone's native grid)."""
    return stride_grid(height, width, stride) if rule == "stride" else None


def fits(grid: tuple[int, int], window: int) -> bool:
    """Whether ``grid`` fits in one ``window x window`` pass."""
    return grid[0] <= window and grid[1] <= window


def window_spans(length: int, window: int, overlap: int) -> list[Span]:
    """Windows covering ``length`` tokens: as few as an overlap of at least ``overlap``
    allows, all of one size (at most ``window``, shrunk so no token is run twice more
    than needed), the first flush with the start, the last with the end, evenly spread."""
    if length <= window:
        return [(0, length)]
    count = -(-(length - overlap) // (window - overlap))  # integer ceil
    size = -(-(length + (count - 1) * overlap) // count)
    last = length - size
    return [(round(i * last / (count - 1)), size) for i in range(count)]


def window_weights(spans: Sequence[Span], length: int) -> Tensor:
    """``(len(spans), size)`` blending weights along one axis, summing to 1 at every token.

    Inside a window the weight is 1; across an overlap of ``L`` tokens it ramps
    linearly, ``(k + 1) / (L + 1)`` up in the later window and the complement down in
    the earlier one; edges on the grid border keep weight 1. The ramps are normalised
    by their sum, so the blend is exact wherever windows agree (no seams).
    """
    size = spans[0][1]
    pos = torch.arange(size, dtype=torch.float64)
    rows = []
    for i, (start, _) in enumerate(spans):
        weight = torch.ones(size, dtype=torch.float64)
        if i > 0:
            lead = spans[i - 1][0] + size - start  # overlap with the previous window
            weight = torch.minimum(weight, (pos + 1) / (lead + 1))
        if i + 1 < len(spans):
            tail = start + size - spans[i + 1][0]  # overlap with the next window
            weight = torch.minimum(weight, (size - pos) / (tail + 1))
        rows.append(weight)
    weights = torch.stack(rows)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, _), weight in zip(spans, weights):
        total[start : start + size] += weight
    return torch.stack([w / total[s : s + size] for (s, _), w in zip(spans, weights)])


def budget_grid(grid: tuple[int, int], window: int) -> tuple[int, int]:
    """``grid`` scaled (aspect kept) so its longer side is ``window`` tokens; unchanged if it fits."""
    if fits(grid, window):
        return grid
    scale = window / max(grid)
    return max(1, round(grid[0] * scale)), max(1, round(grid[1] * scale))


def _interpolation_antialias(backbone: nn.Module) -> bool:
    """The backbone's own antialias knob when it has one (FeatureBackbone), else off."""
    return isinstance(backbone, FeatureBackbone) and backbone.antialias


@dataclass(frozen=True)
class GuidePass:
    """The rule of a guide pass: grid, pass rule and the body's padding (module docstring).

    ``prepare(x)`` is the image the pass sees (padded as the body pads it, on the
    stride grid); ``token_grid(H, W)`` the grid of a prepared image (None: native);
    ``features(backbone, prepared, layers)`` the maps on that grid; calling the pass
    does all three. Errors name the ``dino_ir`` recipe keys.
    """

    grid: str = "stride"
    stride: int = 8
    rule: str = DEFAULT_PASS_RULE
    window: int = DEFAULT_WINDOW
    overlap: int = DEFAULT_OVERLAP
    pad_multiple: int = 1

    def __post_init__(self) -> None:
        if self.grid not in GRID_RULES:
            raise BuildError(f"guide_grid must be one of {GRID_RULES}, got {self.grid!r}")
        if self.rule not in PASS_RULES:
            raise BuildError(f"guide_pass must be one of {PASS_RULES}, got {self.rule!r}")
        for key, value, low in (("guide_stride", self.stride, 1), ("guide_window", self.window, 1),
                                ("guide_overlap", self.overlap, 0)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BuildError(f"{key} must be an integer >= {low}, got {value!r}")
        if self.overlap >= self.window:
            raise BuildError(f"guide_overlap ({self.overlap}) must be smaller than guide_window ({self.window})")

    # -- geometry ---------------------------------------------------------------------
    def prepare(self, x: Tensor) -> Tensor:
        """``x`` as the pass sees it: padded as the body pads it (stride grid), else as is.

        Without the padding the backbone would stretch an unpadded image over a grid
        that the body lays over its padded one, and near the bottom and right edges
        the guide would sit a cell off the features it guides.
        """
        if self.grid == "native" or self.pad_multiple <= 1:
            return x
        return pad_to_multiple(x, self.pad_multiple)

    def token_grid(self, height: int, width: int) -> tuple[int, int] | None:
        """The grid of the maps for a prepared input of ``height x width`` (None: native)."""
        return token_grid(self.grid, height, width, self.stride)

    def full_grid(self, backbone: nn.Module, height: int, width: int) -> tuple[int, int]:
        """The grid as a pair, the native one worked out from the backbone's patch."""
        grid = self.token_grid(height, width)
        return grid if grid is not None else stride_grid(height, width, int(backbone.patch_size))

    def windows(self, grid: tuple[int, int]) -> tuple[list[Span], list[Span]]:
        """(row spans, column spans) of the windows over ``grid``."""
        return window_spans(grid[0], self.window, self.overlap), window_spans(grid[1], self.window, self.overlap)

    def tokens_run(self, grid: tuple[int, int]) -> int:
        """Tokens the backbone runs for one image on ``grid`` (the cost the rule buys)."""
        if self.rule == "global" or fits(grid, self.window):
            return grid[0] * grid[1]
        if self.rule == "budget":
            small = budget_grid(grid, self.window)
            return small[0] * small[1]
        rows, cols = self.windows(grid)
        return len(rows) * rows[0][1] * len(cols) * cols[0][1]

    # -- the pass ---------------------------------------------------------------------
    def __call__(self, backbone: nn.Module, x: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
        """The maps of ``layers`` on an unprepared image (``prepare`` then ``features``)."""
        return self.features(backbone, self.prepare(x), layers)

    def features(self, backbone: nn.Module, x: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
        """``{layer: (B, C, h, w)}`` of a prepared image on :meth:`token_grid`'s grid."""
        grid = self.token_grid(x.shape[-2], x.shape[-1])
        full = self.full_grid(backbone, x.shape[-2], x.shape[-1])
        if self.rule == "global" or fits(full, self.window):
            return backbone(x, layers, grid)
        if self.rule == "budget":
            maps = backbone(x, layers, budget_grid(full, self.window))
            return {k: F.interpolate(v, size=full, mode="bilinear", align_corners=False) for k, v in maps.items()}
        return self._windowed(backbone, x, layers, grid, full)

    def _windowed(self, backbone: nn.Module, x: Tensor, layers: Sequence[int],
                  grid: tuple[int, int] | None, full: tuple[int, int]) -> dict[int, Tensor]:  # fmt: skip
        patch = int(backbone.patch_size)
        if grid is not None:  # lay the image out at patch pixels per token once, then crop
            x = F.interpolate(x, size=(full[0] * patch, full[1] * patch), mode="bilinear",
                              align_corners=False, antialias=_interpolation_antialias(backbone))  # fmt: skip
        rows, cols = self.windows(full)
        row_w, col_w = (window_weights(s, n).to(x.device) for s, n in zip((rows, cols), full))
        cells = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
        out: dict[int, Tensor] = {}
        for first in range(0, len(cells), WINDOWS_PER_CALL):
            group = _same_shape_groups(cells[first : first + WINDOWS_PER_CALL], rows, cols, x, patch)
            for members, crops in group:
                tokens = (rows[0][1], cols[0][1])
                maps = backbone(torch.cat(crops), layers, tokens if grid is not None else None)
                for layer, fmap in maps.items():
                    if layer not in out:
                        out[layer] = fmap.new_zeros(x.shape[0], fmap.shape[1], *full)
                    for n, (i, j) in enumerate(members):
                        (ty, th), (tx, tw) = rows[i], cols[j]
                        weight = (row_w[i][:, None] * col_w[j][None, :]).to(fmap.dtype)
                        piece = fmap[n * x.shape[0] : (n + 1) * x.shape[0]]
                        out[layer][:, :, ty : ty + th, tx : tx + tw] += piece * weight
        return out


def _same_shape_groups(cells: list[tuple[int, int]], rows: list[Span], cols: list[Span], x: Tensor,
                       patch: int) -> list[tuple[list[tuple[int, int]], list[Tensor]]]:  # fmt: skip
    """The crops of ``cells`` grouped by pixel shape (on the native grid the last row and
    column of windows may be cut by the image border; the backbone pads them itself)."""
    groups: dict[tuple[int, int], tuple[list[tuple[int, int]], list[Tensor]]] = {}
    for i, j in cells:
        (ty, th), (tx, tw) = rows[i], cols[j]
        crop = x[:, :, ty * patch : (ty + th) * patch, tx * patch : (tx + tw) * patch]
        members, crops = groups.setdefault(tuple(crop.shape[-2:]), ([], []))
        members.append((i, j))
        crops.append(crop)
    return list(groups.values())
