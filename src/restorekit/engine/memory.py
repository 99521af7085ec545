"""Memory budgets for inference: how much a restore may use, and the tile size that fits.

The arithmetic, per image of ``H x W`` restored in tiles of ``t`` pixels, ``b`` tiles
per model call:

    resident + IMAGE_BYTES_PER_PIXEL * H * W + MARGIN * activations(b, t)  <=  budget

* ``resident``: what the process holds when the restore starts: on the CPU its
  resident set (the interpreter, the libraries and the loaded model), on a GPU the
  memory torch has allocated there (the model); :func:`model_bytes` alone when
  planning without a device;
* the image's own buffers, independent of the tile: the input in float32 (12 bytes
  a pixel), the float64 sum of weighted tiles (24) and of the weights (8), the
  float32 result (12), plus the file's decoded and encoded copies (40 at most);
* ``activations(b, t)``: the peak of live tensor bytes while the model restores one
  batch of ``b`` tiles, measured exactly (no estimate, no real compute) by running
  the model on the meta device under :class:`LiveBytes`; ``MARGIN`` covers the
  allocator's fragmentation and kernels' workspaces, which no tensor shows.

:class:`TilePlanner` picks the largest tile (then the largest batch, up to the
default) that fits; the whole image when it fits at once.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from restorekit.errors import RestorekitError

try:
    import resource  # Unix only: the peak resident set where /proc is missing (macOS)
except ImportError:  # pragma: no cover - Windows
    resource = None

logger = logging.getLogger(__name__)

IMAGE_BYTES_PER_PIXEL = 96  # input 12 + sum 24 + weight sum 8 + result 12 + file copies 40
MARGIN = 1.25  # allocator fragmentation and kernel workspaces over the live tensors
FREE_SHARE = {"cpu": 0.8, "cuda": 0.9}  # of the free memory a default budget takes
TILE_STEP = 64  # tile sizes are multiples of this
MIN_TILE = 128
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


class MemoryBudgetError(RestorekitError, ValueError):
    """A memory budget that cannot be read or met; the message names the option."""


def parse_memory(text: str | int, option: str = "--max-memory") -> int:
    """Bytes from ``8G``, ``8GiB``, ``512m``, ``1.5T`` or a plain number of bytes (binary units)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
    if not match:
        raise MemoryBudgetError(f"{option} {text!r}: give a size such as 8G, 8GiB or 512M")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value < 1:
        raise MemoryBudgetError(f"{option} {text!r}: must be positive")
    return int(value)


def format_bytes(value: float) -> str:
    """``1.50 GiB``, ``300.0 MiB``: for messages."""
    if value >= 2**30:
        return f"{value / 2**30:.2f} GiB"
    return f"{value / 2**20:.1f} MiB"


def free_memory(device: torch.device) -> int:
    """Free memory now: the GPU's free memory, or the host's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def resident_bytes(device: torch.device) -> int:
    """Memory in use now: the process's resident set on the CPU, torch's allocations on a GPU."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        if resource is None:  # Windows: no resident-set figure at all
            return 0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the peak: an upper bound
        return peak if sys.platform == "darwin" else peak * 1024


def default_budget(device: torch.device) -> int:
    """What is in use now plus a share of the memory free now (call it with the model loaded)."""
    return resident_bytes(device) + int(FREE_SHARE.get(device.type, 0.8) * free_memory(device))


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensors created while active (storages counted once, views free).

    Each op's outputs are recorded by storage; a storage is released when the last
    tensor seen holding it is collected. Works on any device, the meta device included.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.now = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.now -= entry[0]
                del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                entry = self.live.get(storage._cdata)
                if entry is None:
                    entry = self.live[storage._cdata] = [storage.nbytes(), 0]
                    self.now += entry[0]
                    self.peak = max(self.peak, self.now)
                entry[1] += 1
                weakref.finalize(tensor, self._release, storage._cdata)
        return out


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak live tensor bytes of ``fn()`` (its result released before returning)."""
    tracker = LiveBytes()
    with tracker:
        result = fn()
        del result
    return tracker.peak


def activation_bytes(model: nn.Module, batch: int, height: int, width: int, dtype: torch.dtype = torch.float32) -> int:
    """Peak bytes of one inference call on ``(batch, 3, height, width)``, its input and
    output included, counted on the meta device (no memory, no compute)."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    meta = {name: torch.empty_like(t, device="meta") for name, t in named}

    def call() -> torch.Tensor:
        image = torch.empty(batch, 3, height, width, device="meta", dtype=dtype)
        return functional_call(model, meta, (image,)).double()  # the tiler's float64 copy

    with torch.inference_mode():
        return peak_bytes(call)


def smallest_tile(overlap: int) -> int:
    """The smallest tile a plan may choose: ``MIN_TILE``, or the first step over twice the overlap."""
    return max(MIN_TILE, TILE_STEP * (2 * overlap // TILE_STEP + 1))


@dataclass(frozen=True)
class TilePlan:
    """A tile size (None: the whole image) and batch, with the bytes they are expected to take."""

    tile: int | None
    batch: int
    estimate: int
    budget: int

    def describe(self) -> str:
        what = "whole image" if self.tile is None else f"tiles of {self.tile} px, {self.batch} per call"
        return f"{what}: about {format_bytes(self.estimate)} of a {format_bytes(self.budget)} budget"


class TilePlanner:
    """Plans tiles for one model and budget (:func:`plan`), for images of any size.

    Counting a full-size model on the meta device takes a second or two, so the
    planner fits ``activations = a + b * pixels`` from two counts once (exact for
    convolutional bodies and windowed guidance, whose activations are linear in the
    pixels), and counts exactly only the sizes whose prediction comes near the budget.
    """

    FIT_SIZES = (256, 512)
    CHECK_ABOVE = 0.5  # predictions above this share of the budget are counted exactly

    def __init__(self, model: nn.Module, budget: int, *, max_batch: int = 4, min_tile: int = MIN_TILE,
                 resident: int | None = None) -> None:  # fmt: skip
        self.model, self.budget = model, int(budget)
        self.max_batch, self.min_tile = max(1, int(max_batch)), int(min_tile)
        self.resident = model_bytes(model) if resident is None else int(resident)
        self._counted: dict[tuple[int, int, int], int] = {}
        small, large = (self._count(1, s, s) for s in self.FIT_SIZES)
        self.per_pixel = max(0.0, (large - small) / (self.FIT_SIZES[1] ** 2 - self.FIT_SIZES[0] ** 2))
        self.per_call = max(0.0, small - self.per_pixel * self.FIT_SIZES[0] ** 2)

    def _count(self, batch: int, height: int, width: int) -> int:
        key = (batch, height, width)
        if key not in self._counted:
            self._counted[key] = activation_bytes(self.model, batch, height, width)
        return self._counted[key]

    def cost(self, height: int, width: int, tile: int | None, batch: int = 1, *, exact: bool = True) -> int:
        """Bytes a restore of ``height x width`` in ``tile`` px tiles (None: whole) takes:
        predicted from the fit, counted exactly when ``exact`` and the prediction is near the budget."""
        h, w = (height, width) if tile is None else (min(tile, height), min(tile, width))
        fixed = self.resident + IMAGE_BYTES_PER_PIXEL * height * width
        predicted = fixed + int(MARGIN * batch * (self.per_call + self.per_pixel * h * w))
        if not exact or predicted < self.CHECK_ABOVE * self.budget:
            return predicted
        return fixed + int(MARGIN * self._count(batch, h, w))

    def plan(self, height: int, width: int) -> TilePlan:
        """The whole image when it fits; else the largest tile (a multiple of ``TILE_STEP``,
        at least ``min_tile``) that fits, then the largest batch up to ``max_batch``.
        When nothing fits: the smallest tile, with a warning."""
        whole = self.cost(height, width, None)
        if whole <= self.budget:
            return TilePlan(None, 1, whole, self.budget)
        sizes = list(range(self.min_tile, max(height, width), TILE_STEP)) or [self.min_tile]
        index = self._largest(len(sizes), lambda i: self.cost(height, width, sizes[i], exact=False))
        while index > 0 and self.cost(height, width, sizes[index]) > self.budget:
            index -= 1  # the prediction was short: step down to what the count says fits
        tile, estimate = sizes[index], self.cost(height, width, sizes[index])
        if estimate > self.budget:
            logger.warning(
                "a %s memory budget is too small even for %d px tiles (about %s); using them anyway",
                format_bytes(self.budget),
                tile,
                format_bytes(estimate),
            )
            return TilePlan(tile, 1, estimate, self.budget)
        batch = 1 + self._largest(self.max_batch, lambda i: self.cost(height, width, tile, i + 1, exact=False))
        while batch > 1 and self.cost(height, width, tile, batch) > self.budget:
            batch -= 1
        return TilePlan(tile, batch, self.cost(height, width, tile, batch), self.budget)

    def _largest(self, count: int, cost: Callable[[int], int]) -> int:
        """The largest index in ``range(count)`` whose ``cost`` fits (0 when none does);
        ``cost`` grows with the index."""
        low, high = 0, count - 1
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if cost(mid) <= self.budget else (low, mid - 1)
        return low
