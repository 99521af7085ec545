"""Reading and writing images as float tensors in [0, 1].

Reads 8- and 16-bit PNG (gray, gray+alpha, RGB, RGBA), JPEG, BMP, WebP and TIFF
(through tifffile, 8/16-bit and float). An EXIF orientation (a phone's portrait
photo stored sideways) is applied on read, so images are restored and written
upright, untagged; TIFF orientation tags are not read. Pillow reads 16-bit colour
PNGs only at 8-bit precision, so those are decoded twice by Pillow's own zip decoder, once for
the high bytes and once for the low bytes, and recombined: no precision is lost
and no PNG code of our own runs on untrusted data. Writing is atomic (temporary
file in the same folder, fsync, rename); 16-bit PNG is written by a small
encoder here because Pillow cannot write 16-bit colour PNGs.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image, UnidentifiedImageError

from restorekit.errors import DataError
from restorekit.io.atomic import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class LoadedImage:
    """An image file's pixels and what is needed to write a result back alike."""

    rgb: torch.Tensor  # (3, H, W) float32 in [0, 1]; gray sources are replicated
    alpha: torch.Tensor | None  # (1, H, W) float32 in [0, 1], or None
    gray: bool  # the file had one colour channel
    bit_depth: int  # 8 or 16 (float TIFFs report 32)


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# -- reading -------------------------------------------------------------------------
class ImageReadError(DataError):
    """An image file that cannot be decoded; the message names the file and the reason."""


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Read an image file: RGB, optional alpha, whether it was gray, its bit depth.

    Any failure to decode (an empty, truncated or mislabelled file) is an
    :class:`ImageReadError` naming the file and the reason.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array, depth = _read_tiff(path)
        else:
            array, depth = _read_pillow(path)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders of untrusted bytes fail in many ways
        raise ImageReadError(f"{path}: {unreadable_reason(path, exc)}") from exc
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise ImageReadError(f"{path}: unsupported number of channels {channels}")
    pixels = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)
    scale = {8: 255.0, 16: 65535.0}.get(depth, 1.0)
    pixels = (pixels.float() / scale).clamp(0, 1)
    colour, alpha = (pixels[:-1], pixels[-1:]) if channels in (2, 4) else (pixels, None)
    gray = colour.shape[0] == 1
    rgb = colour.expand(3, -1, -1).contiguous() if gray else colour
    return LoadedImage(rgb=rgb, alpha=alpha, gray=gray, bit_depth=depth)


def unreadable_reason(path: Path, exc: BaseException) -> str:
    """Why ``path`` could not be decoded, in words (``exc`` is the decoder's error)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    if isinstance(exc, UnidentifiedImageError):
        return f"not an image: its content is no image format Pillow knows (suffix {path.suffix!r})"
    message = str(exc).replace(f"'{path}'", "").replace(str(path), "").strip(" :")
    return f"damaged or unsupported image data ({type(exc).__name__}: {message or 'no detail'})"


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]: gray replicated to RGB, alpha dropped."""
    return load_image(path).rgb


def _read_tiff(path: Path) -> tuple[np.ndarray, int]:
    array = tifffile.imread(path)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar (C, H, W) storage
    if array.dtype == np.uint8:
        return array, 8
    if array.dtype == np.uint16:
        return array, 16
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32), 32
    raise ImageReadError(f"{path}: unsupported TIFF sample type {array.dtype}")


def _read_pillow(path: Path) -> tuple[np.ndarray, int]:
    with Image.open(path) as im:
        array, depth = _decode_pillow(path, im)
        try:
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
        except Exception:  # noqa: BLE001 - damaged EXIF: the pixels are fine, take them as stored
            orientation = 1
        return upright(array, orientation), depth


def _decode_pillow(path: Path, im: object) -> tuple[np.ndarray, int]:
    """The pixels of an open Pillow image as stored (before any EXIF orientation)."""
    rawmode = _png_rawmode(im) if im.format == "PNG" else ""  # type: ignore[attr-defined]
    if rawmode in ("RGB;16B", "RGBA;16B", "LA;16B"):
        return _read_png16(path, im, rawmode), 16
    mode = im.mode  # type: ignore[attr-defined]
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.clip(np.asarray(im, dtype=np.int64), 0, 65535).astype(np.uint16), 16
    if mode == "F":
        return np.asarray(im, dtype=np.float32), 32
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im), 8
    has_alpha = mode in ("PA", "RGBa", "La") or "transparency" in im.info  # type: ignore[attr-defined]
    return np.asarray(im.convert("RGBA" if has_alpha else "RGB")), 8  # type: ignore[attr-defined]


EXIF_ORIENTATION = 0x0112


def upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (H, W[, C]) as a viewer displays it under EXIF ``orientation`` (1-8).

    Phones store a portrait photo sideways and say so in this tag; restoring the
    stored pixels would give a result that displays turned once written untagged.
    Unknown values count as 1 (as stored).
    """
    flips = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # mirrored along the main diagonal
        6: lambda a: np.rot90(a, k=-1),  # displayed turned 90 degrees clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # mirrored along the other diagonal
        8: lambda a: np.rot90(a, k=1),  # displayed turned 90 degrees counter-clockwise
    }
    flip = flips.get(orientation) if isinstance(orientation, int) else None
    return np.ascontiguousarray(flip(array)) if flip else array


def _png_rawmode(im: object) -> str:
    tile = getattr(im, "tile", None) or []
    if len(tile) != 1:
        return ""
    args = tile[0][3]
    return args if isinstance(args, str) else (args[0] if args else "")


def _read_png16(path: Path, im: object, rawmode: str) -> np.ndarray:
    """Full 16-bit samples of an RGB, RGBA or gray+alpha PNG, decoded by Pillow.

    RGB/RGBA: two passes, ``;16B`` for the high bytes and ``;16L`` (which reads
    the second byte of each big-endian sample) for the low bytes. Gray+alpha
    (which Pillow opens as RGBA): one pass reading the 4 raw bytes per pixel.
    """
    if getattr(im, "info", {}).get("interlace"):
        warnings.warn(f"{path}: interlaced 16-bit PNG read at 8-bit precision", stacklevel=4)
        array = np.asarray(im).astype(np.uint16) * 257
        return array[..., [0, 3]] if rawmode == "LA;16B" else array
    tile = im.tile[0]  # type: ignore[attr-defined]
    if rawmode == "LA;16B":
        raw = _decode_png_tile(path, tile, "RGBA").astype(np.uint16)
        return np.stack([(raw[..., 0] << 8) | raw[..., 1], (raw[..., 2] << 8) | raw[..., 3]], -1)
    mode = rawmode.split(";")[0]
    high = _decode_png_tile(path, tile, f"{mode};16B").astype(np.uint16)
    low = _decode_png_tile(path, tile, f"{mode};16L").astype(np.uint16)
    return (high << 8) | low


def _decode_png_tile(path: Path, tile: object, rawmode: str) -> np.ndarray:
    with Image.open(path) as again:
        again.tile = [tile._replace(args=rawmode) if hasattr(tile, "_replace") else (*tile[:3], rawmode)]  # type: ignore[attr-defined,index]
        again.load()
        return np.asarray(again)


# -- writing -------------------------------------------------------------------------
def write_bytes_atomic(path: str | os.PathLike, write: Callable[[object], None], *, replace: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename onto it.

    The file gets the mode any new file gets under the user's umask. ``replace=False``:
    ``path`` is created only if no file has its name by then (``AppearedMeanwhile``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, replace=replace) as tmp:
        with open(tmp, "wb") as handle:
            write(handle)


def to_array(img: torch.Tensor, bit_depth: int = 8) -> np.ndarray:
    """(C, H, W) or (H, W) float in [0, 1] -> (H, W, C) uint8 or uint16, rounded."""
    if img.dim() == 2:
        img = img[None]
    if img.dim() != 3 or img.shape[0] not in (1, 2, 3, 4):
        raise ValueError(f"an image tensor must be (C, H, W) with C in 1-4, got {tuple(img.shape)}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    peak = 255.0 if bit_depth == 8 else 65535.0
    values = torch.round(img.detach().float().cpu().clamp(0, 1) * peak)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return values.permute(1, 2, 0).numpy().astype(dtype)


def write_image(
    path: str | os.PathLike,
    img: torch.Tensor,
    bit_depth: int = 8,
    alpha: torch.Tensor | None = None,
    quality: int = 95,
    *,
    replace: bool = True,
) -> Path:
    """Write a (C, H, W) float image in [0, 1] atomically; the format follows the suffix.

    ``alpha`` (1, H, W) is appended as a fourth (or second) channel. 16-bit is
    written for PNG and TIFF only. ``replace=False``: never replace a file that has
    ``path``'s name by the end, even one another process wrote meanwhile (``AppearedMeanwhile``).
    """
    path = Path(path)
    if alpha is not None:
        img = torch.cat([img if img.dim() == 3 else img[None], alpha.to(img)], 0)
    array = to_array(img, bit_depth)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        buffer = io.BytesIO()
        photometric = "minisblack" if array.shape[-1] in (1, 2) else "rgb"
        extra = ["unassalpha"] if array.shape[-1] in (2, 4) else None
        samples = np.squeeze(array, -1) if array.shape[-1] == 1 else array
        tifffile.imwrite(buffer, samples, photometric=photometric, extrasamples=extra)
        write_bytes_atomic(path, lambda f: f.write(buffer.getvalue()), replace=replace)
        return path
    if bit_depth == 16:
        if suffix != ".png":
            raise ValueError(f"{path}: 16-bit images can be written as PNG or TIFF, not {suffix or 'no suffix'}")
        data = encode_png16(array)
        write_bytes_atomic(path, lambda f: f.write(data), replace=replace)
        return path

    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix {suffix!r}")
    pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if fmt == "JPEG" and pil.mode in ("LA", "RGBA"):
        raise ValueError(f"{path}: JPEG has no alpha channel; write PNG to keep it")
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    write_bytes_atomic(path, lambda f: pil.save(f, format=fmt, **options), replace=replace)
    return path


def encode_png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG of an (H, W, C) uint16 array (C 1-4), rows 'Up'-filtered."""
    height, width, channels = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = array.astype(">u2").reshape(height, width * channels).view(np.uint8)
    filtered = rows.copy()
    filtered[1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps, as the Up filter wants
    scanlines = np.concatenate([np.full((height, 1), 2, np.uint8), filtered], axis=1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
