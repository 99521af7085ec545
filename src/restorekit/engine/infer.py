"""Inference on images of any size: whole, or in tiles blended over their overlaps.

Tiles of ``tile`` pixels step by ``tile - overlap``. Each tile's output is weighted
by a window that is 1 inside, 0 within a guard band of ``overlap // 4`` pixels of
an edge it shares with another tile, and ramps linearly in between; edges on the
image border keep weight 1. Across an overlap the two ramps sum to 1, so the blend
is a partition of unity, and every pixel takes no weight from a tile whose edge is
closer than the guard band: a model whose receptive field is within the guard band
gives the same output tiled as whole (up to float rounding).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from restorekit.engine import memory
from restorekit.errors import RestorekitError
from restorekit.io.atomic import AppearedMeanwhile
from restorekit.io.image_files import is_image_file, load_image, write_image
from restorekit.io.outputs import check_output_folder

logger = logging.getLogger(__name__)


class ImageRestoreError(RestorekitError, ValueError):
    """A restore request that cannot be carried out; the message names the path."""


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(device: torch.device, amp: bool | str) -> contextlib.AbstractContextManager:
    """Autocast on CUDA: ``True`` or ``"bf16"`` in bf16, ``"fp16"`` in float16; nothing
    with ``False`` and nothing on other devices (bf16 is slow on CPUs)."""
    if not amp or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=AMP_DTYPES["bf16" if amp is True else str(amp)])


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, size)`` with tiles of ``tile`` (the last one flush)."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(length: int, start_shared: bool, end_shared: bool, overlap: int) -> torch.Tensor:
    """1-D window of one tile along one axis."""
    guard = overlap // 4
    span = max(1, overlap - 2 * guard)
    pos = torch.arange(length, dtype=torch.float64)
    weight = torch.ones(length, dtype=torch.float64)
    if start_shared:
        weight = torch.minimum(weight, ((pos - guard + 1) / (span + 1)).clamp(0, 1))
    if end_shared:
        weight = torch.minimum(weight, ((length - pos - guard) / (span + 1)).clamp(0, 1))
    return weight


def tile_window(h: int, w: int, top: bool, bottom: bool, left: bool, right: bool, overlap: int) -> torch.Tensor:
    """(h, w) blending weights; a flag says that edge is shared with another tile."""
    return _ramp(h, top, bottom, overlap)[:, None] * _ramp(w, left, right, overlap)[None, :]


def iter_tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """(y, x, th, tw) of every tile."""
    th, tw = min(tile, height), min(tile, width)
    for y in tile_starts(height, tile, overlap):
        for x in tile_starts(width, tile, overlap):
            yield y, x, th, tw


@torch.no_grad()
def restore_tensor(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    tile: int | None = None,
    overlap: int = 32,
    amp: bool | str = False,
    tile_batch: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Restore a (B, 3, H, W) batch in [0, 1]; tiled when ``tile`` is set and smaller than H or W.

    The output is clamped to [0, 1] and returned in float32. ``progress(done, total)``
    is called after each batch of tiles.
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(image.shape)}")
    device = image.device
    _, _, height, width = image.shape
    if tile is None or (height <= tile and width <= tile):
        with autocast_context(device, amp):
            restored = model(image).float().clamp(0, 1)
        if progress is not None:
            progress(1, 1)
        return restored
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    out = torch.zeros(image.shape[0], 3, height, width, dtype=torch.float64, device=device)
    weight_sum = torch.zeros(1, 1, height, width, dtype=torch.float64, device=device)
    tiles = list(iter_tiles(height, width, tile, overlap))
    for first in range(0, len(tiles), tile_batch):
        if progress is not None:
            progress(first, len(tiles))
        group = tiles[first : first + tile_batch]
        crops = torch.cat([image[:, :, y : y + th, x : x + tw] for y, x, th, tw in group])
        with autocast_context(device, amp):
            restored = model(crops).double()
        for i, (y, x, th, tw) in enumerate(group):
            piece = restored[i * image.shape[0] : (i + 1) * image.shape[0]]
            window = tile_window(th, tw, y > 0, y + th < height, x > 0, x + tw < width, overlap).to(device)
            out[:, :, y : y + th, x : x + tw] += piece * window
            weight_sum[:, :, y : y + th, x : x + tw] += window
    if progress is not None:
        progress(len(tiles), len(tiles))
    return out.div_(weight_sum).float().clamp_(0, 1)  # in place: the image's buffers are the big ones


def non_finite_output(output: torch.Tensor) -> str | None:
    """Why ``output`` must not be used (it holds NaN or infinity), or None when it is finite.

    Clamping keeps NaN, and writing a NaN pixel gives black: such an output is an
    error, never an image or a score.
    """
    finite = torch.isfinite(output)
    if bool(finite.all()):
        return None
    count = int((~finite).sum())
    return (
        f"the model's output holds NaN or infinity ({count} of {output.numel()} values): the weights "
        "are broken, or the precision overflowed (try --precision fp32)"
    )


# -- files ----------------------------------------------------------------------------
def plan_outputs(source: str | Path, target: str | Path, *, overwrite: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) pairs for a file or a folder; refuses to replace files unless ``overwrite``.

    A folder input maps to a folder output with the same relative names. Every
    conflict, unreadable input and output format that cannot hold its input
    (:func:`check_output_formats`) is found before any image is restored.
    """
    source, target = Path(source), Path(target)
    if source.is_dir():
        inputs = sorted(p for p in source.rglob("*") if p.is_file() and is_image_file(p))
        if not inputs:
            raise ImageRestoreError(f"INPUT {source}: no image files in this folder")
        if target.exists() and not target.is_dir():
            raise ImageRestoreError(f"OUTPUT {target}: must be a folder when INPUT is a folder")
        pairs = [(p, target / p.relative_to(source)) for p in inputs]
    elif source.is_file():
        if not is_image_file(source):
            raise ImageRestoreError(f"INPUT {source}: not an image file (suffix {source.suffix!r})")
        out = target / source.name if target.is_dir() else target
        if not is_image_file(out):
            raise ImageRestoreError(f"OUTPUT {out}: give an image file name (.png, .jpg, ...)")
        pairs = [(source, out)]
    else:
        raise ImageRestoreError(f"INPUT {source}: no such file or folder")
    if not overwrite:
        for src, out in pairs:
            if out.exists():
                what = "is the input itself" if out.resolve() == src.resolve() else "already exists"
                raise ImageRestoreError(f"OUTPUT {out} {what}; pass --overwrite to replace it")

    checked: set[Path] = set()
    for _, out in pairs:  # a file in the way of a folder, or a folder refusing writes: said now
        if out.parent not in checked:
            checked.add(out.parent)
            check_output_folder(out.parent, "OUTPUT", named=out)
    check_output_formats(pairs)
    return pairs


def _output_depth(bit_depth: int) -> int:
    """The bit depth an output is written at: 16 for 16-bit and float inputs, else 8."""
    return 16 if bit_depth > 8 else 8


def _message_without_path(exc: BaseException, path: Path) -> str:
    """``exc``'s message without a leading ``"<path>: "`` (the caller names the path itself)."""
    message = str(exc)
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def check_output_formats(pairs: list[tuple[Path, Path]]) -> None:
    """Refuse, before any image is restored, outputs whose format cannot hold their input.

    Each input is read once and a 1-pixel image of the same kind (gray or colour,
    alpha, bit depth) is written to a scratch folder through the very writer used
    later, so every limit of a format (16 bits only in PNG/TIFF, no alpha in JPEG,
    ...) is caught up front and no output of a folder run is written before an
    error. Results are cached per (suffix, kind), so only the reads cost per file.
    """
    verdicts: dict[tuple[str, bool, bool, int], str | None] = {}
    with tempfile.TemporaryDirectory(prefix="restorekit-format-") as scratch:
        for src, out in pairs:
            try:
                image = load_image(src)
            except (OSError, ValueError) as exc:
                raise ImageRestoreError(f"INPUT {src}: cannot read it ({_message_without_path(exc, src)})") from exc
            depth, alpha = _output_depth(image.bit_depth), image.alpha is not None
            key = (out.suffix.lower(), image.gray, alpha, depth)
            if key not in verdicts:
                probe = Path(scratch) / f"probe{len(verdicts)}{out.suffix}"
                pixel = torch.zeros(1 if image.gray else 3, 1, 1)
                try:
                    write_image(probe, pixel, bit_depth=depth, alpha=torch.zeros(1, 1, 1) if alpha else None)
                    verdicts[key] = None
                except (OSError, ValueError, KeyError) as exc:
                    verdicts[key] = _message_without_path(exc, probe)
            problem = verdicts[key]
            if problem is not None:
                kind = f"{depth}-bit {'gray' if image.gray else 'RGB'}{' with alpha' if alpha else ''}"
                raise ImageRestoreError(f"OUTPUT {out}: {problem} (INPUT {src} is {kind}); nothing was restored")


def inference_amp(precision: str, recipe: Mapping[str, Any] | None, device: torch.device) -> bool | str:
    """The autocast eval/restore run under (:func:`autocast_context`'s switch): ``auto``
    follows the recipe's ``train.amp`` (a model trained in fp32 is scored in fp32, one
    trained in fp16 in fp16), and the CPU stays fp32."""
    if device.type != "cuda" or precision == "fp32":
        return False
    if precision == "bf16":
        return True
    amp = ((recipe or {}).get("train") or {}).get("amp", "auto")
    return "fp16" if amp == "fp16" else amp != "off"


def restore_files(
    model: nn.Module,
    pairs: list[tuple[Path, Path]],
    *,
    tile: int | str | None,
    overlap: int,
    device: torch.device,
    amp: bool | str | None = None,
    max_memory: int | None = None,
    progress: bool = False,
    overwrite: bool = True,
    on_progress: Callable[[Path, int, int], None] | None = None,
    runner: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Restore each input and write it in the input's format (gray, alpha, bit depth kept).

    ``tile``: pixels, None for whole images, or ``"auto"``: the largest tile whose restore
    fits ``max_memory`` bytes, counting what the process already holds (default: that
    plus a share of the free memory; :mod:`restorekit.engine.memory`). ``amp``:
    :func:`autocast_context`'s switch (None: bf16 on CUDA). ``progress``: a bar over
    each image's tiles on stderr. ``overwrite=False``: an output is created only if no
    file has its name when it is written (another restore may have written it meanwhile).
    ``on_progress(input, done, total)``: called as each image's tiles are restored (the app's bar).
    ``runner``: what restores the tiles (default: ``model``; an ONNX Runtime model,
    :mod:`restorekit.engine.runtime`); ``model`` plans them."""
    amp = device.type == "cuda" if amp is None else amp

    model.eval()
    planner = None
    for src, out in pairs:
        try:
            image = load_image(src)
        except (OSError, ValueError) as exc:
            raise ImageRestoreError(f"INPUT {src}: cannot read it ({_message_without_path(exc, src)})") from exc
        size, batch = tile, 4
        if tile == "auto":
            planner = planner or memory.TilePlanner(
                model,
                max_memory or memory.default_budget(device),
                min_tile=memory.smallest_tile(overlap),
                resident=memory.resident_bytes(device),
            )
            plan = planner.plan(*image.rgb.shape[-2:])
            logger.info("%s: %s", src.name, plan.describe())
            size, batch = plan.tile, plan.batch
        with tqdm(desc=src.name, unit="tile", disable=None if progress else True, leave=False) as bar:
            restored = restore_tensor(
                runner or model,
                image.rgb[None].to(device),
                tile=size,
                overlap=overlap,
                amp=amp,
                tile_batch=batch,
                progress=lambda done, total, src=src: _advance(bar, done, total, src, on_progress),
            )[0].cpu()
        problem = non_finite_output(restored)
        if problem:
            raise ImageRestoreError(f"INPUT {src}: {problem}; {out} was not written")
        if image.gray:
            restored = restored.mean(dim=0, keepdim=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_image(out, restored, bit_depth=_output_depth(image.bit_depth), alpha=image.alpha, replace=overwrite)
        except AppearedMeanwhile as exc:
            raise ImageRestoreError(f"OUTPUT {out} {exc.strerror}") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise ImageRestoreError(f"OUTPUT {out}: {_message_without_path(exc, out)}") from exc


def _advance(bar: Any, done: int, total: int, src: Path, on_progress: Callable[[Path, int, int], None] | None) -> None:
    """Move a tqdm bar (and the caller's ``on_progress``) to ``done`` of ``total`` tiles."""
    bar.total = total
    bar.update(done - bar.n)
    if on_progress is not None:
        on_progress(src, done, total)
