"""Datasets of (degraded, clean) pairs: the base class, paired folders, synthetic.

An item is ``{"lq": (3, H, W), "gt": (3, H, W), "task": str, "name": str}``,
float32 in [0, 1]. A dataset either reads real pairs (``load`` returns both) or
reads clean images and degrades them on the fly (``load`` returns ``lq=None``
and ``degradation`` is set): the training stream then degrades the cropped patch
with a fresh seed, while ``dataset[i]`` uses a fixed seed per index, so test
images are the same on every run.

Pairs are matched by a key (the file stem by default); a file without a partner
is always reported, as an error (``strict=True``) or a warning that lists it.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from restorekit.data.degradations import build_degradation
from restorekit.data.seeding import derive_seed
from restorekit.errors import DataError
from restorekit.io.image_files import IMAGE_EXTENSIONS, is_image_file, load_image, read_image, write_image

__all__ = [
    "RestorationDataset",
    "PairedFolderDataset",
    "SyntheticDataset",
    "list_images",
    "pair_files",
    "resolve_folder",
    "read_image",
    "load_image",
    "write_image",
    "IMAGE_EXTENSIONS",
]

log = logging.getLogger("restorekit.data")
_SHOWN = 10  # unmatched names listed in a message


class RestorationDataset(Dataset):
    """Base: subclasses fill ``self.names`` and implement :meth:`load`."""

    task: str = "restore"
    degradation: Callable[..., torch.Tensor] | None = None
    seed: int = 0
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(lq or None, gt) at full size; ``None`` means "degrade gt on the fly".

        Images are float in [0, 1], or uint8 (0-255), which the training stream
        converts after cropping, so large images cost less.
        """
        raise NotImplementedError

    def image_files(self, index: int) -> tuple[Path, ...]:
        """The files item ``index`` is read from (empty when it is not read from files).

        ``restorekit data check`` decodes each of them once, so one bad file of a
        pair is reported along with its partner's state.
        """
        return ()

    def item_seed(self, index: int) -> int:
        """The fixed seed of item ``index``'s degradation (test splits stay identical)."""
        return derive_seed(self.seed, index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{type(self).__name__} index {index} out of range for {len(self)} images")
        index %= len(self)
        lq, gt = self.load(index)
        lq, gt = (as_float(lq) if lq is not None else None), as_float(gt)
        if lq is None:
            lq = self.degrade(gt, self.item_seed(index))
        return {"lq": lq, "gt": gt, "task": self.task, "name": self.names[index]}

    def degrade(self, gt: torch.Tensor, rng: Any) -> torch.Tensor:
        if self.degradation is None:
            raise DataError(f"{type(self).__name__} ({self.task}) has no lq image and no degradation")
        return self.degradation(gt, rng)


def as_float(img: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1] from a float or uint8 image tensor."""
    if img.dtype == torch.uint8:
        return img.float() / 255.0
    return img if img.dtype == torch.float32 else img.float()


# -- files ---------------------------------------------------------------------------
def resolve_folder(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """``path`` as is if absolute (or no root), else under the data ``root``."""
    path = Path(os.path.expanduser(str(path)))
    if root is not None and not path.is_absolute():
        return Path(os.path.expanduser(str(root))) / path
    return path


def list_images(folder: str | os.PathLike, recursive: bool = False, what: str = "image folder") -> list[Path]:
    """Image files in ``folder`` (sorted), or a DataError naming the folder if it is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} not found: {folder}")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def read_names(listing: str | os.PathLike, root: str | os.PathLike | None = None) -> set[str]:
    """The names listed in a text file, one a line (blank lines and ``#`` comments skipped)."""
    path = resolve_folder(listing, root)
    if not path.is_file():
        raise DataError(f"list file not found: {path}")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line}


def stem_key(path: Path) -> str:
    return path.stem


def _keyed(paths: Iterable[Path], key: Callable[[Path], str], where: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in paths:
        k = key(path)
        if k in out:
            raise DataError(f"{where}: {out[k].name} and {path.name} both match key {k!r}; keep one of them")
        out[k] = path
    return out


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return shown + more


def pair_files(
    lq_paths: Sequence[Path],
    gt_paths: Sequence[Path],
    *,
    where: str,
    lq_key: Callable[[Path], str] = stem_key,
    gt_key: Callable[[Path], str] = stem_key,
    many_to_one: bool = False,
    strict: bool = True,
) -> list[tuple[Path, Path]]:
    """Match degraded to clean files by key; every unmatched file is reported.

    ``many_to_one`` lets several degraded files share one clean file (RESIDE:
    ``0025_0.8_0.1.jpg`` -> ``0025.jpg``). With ``strict=False`` unmatched files
    are left out with a warning that lists them; otherwise it is a DataError.
    """
    gt_by_key = _keyed(gt_paths, gt_key, f"{where} (clean)")
    lq_by_key: dict[str, list[Path]] = {}
    for path in lq_paths:
        lq_by_key.setdefault(lq_key(path), []).append(path)
    if not many_to_one:
        for k, paths in lq_by_key.items():
            if len(paths) > 1:
                raise DataError(f"{where} (degraded): {', '.join(p.name for p in paths)} all match key {k!r}")
    lq_only = [p.name for k, ps in lq_by_key.items() if k not in gt_by_key for p in ps]
    gt_only = [p.name for k, p in gt_by_key.items() if k not in lq_by_key]
    problems = []
    if lq_only:
        problems.append(f"{len(lq_only)} degraded file(s) without a clean partner: {_listing(lq_only)}")
    if gt_only:
        problems.append(f"{len(gt_only)} clean file(s) without a degraded partner: {_listing(gt_only)}")
    if problems:
        message = f"{where}: " + "; ".join(problems)
        # With many degraded files per clean one, an unused clean file loses no pair: warn only.
        if strict and (lq_only or not many_to_one):
            raise DataError(message + " (pass strict: false to skip them with a warning)")
        warnings.warn(message + " (skipped)", stacklevel=3)
        log.warning("%s (skipped)", message)
    return [(lq, gt_by_key[k]) for k in sorted(lq_by_key) if k in gt_by_key for lq in lq_by_key[k]]


def read_pair(lq_path: Path, gt_path: Path, align: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """Read a pair; sizes must agree (``align='exact'``) or are centre-cropped to the smaller ('center')."""
    lq, gt = read_image(lq_path), read_image(gt_path)
    if lq.shape != gt.shape:
        if align != "center":
            raise DataError(
                f"{lq_path} is {tuple(lq.shape[1:])} but its clean partner {gt_path} is {tuple(gt.shape[1:])}"
            )
        lq, gt = center_crop_to(lq, gt.shape[-2:]), center_crop_to(gt, lq.shape[-2:])
    return lq, gt


def center_crop_to(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    height, width = min(img.shape[-2], size[0]), min(img.shape[-1], size[1])
    top, left = (img.shape[-2] - height) // 2, (img.shape[-1] - width) // 2
    return img[..., top : top + height, left : left + width]


# -- datasets ------------------------------------------------------------------------
class PairedFolderDataset(RestorationDataset):
    """Degraded and clean images in two folders, matched by file stem.

    ``path`` holds ``lq/`` and ``gt/`` (their names set by ``lq`` and ``gt``);
    relative paths are under the data ``root``. ``subset`` (a file listing pair
    names, one a line) keeps only those pairs, ``exclude`` leaves them out: the
    held-out split ``restorekit init --pairs`` writes is read both ways.
    """

    def __init__(
        self,
        path: str,
        lq: str = "lq",
        gt: str = "gt",
        task: str = "restore",
        strict: bool = True,
        recursive: bool = False,
        root: str | None = None,
        subset: str | None = None,
        exclude: str | None = None,
    ) -> None:
        base = resolve_folder(path, root)
        self.task = task
        lq_dir, gt_dir = base / lq, base / gt
        where = f"paired_folder {base}"
        self.pairs = pair_files(
            list_images(lq_dir, recursive, f"{where}: degraded folder"),
            list_images(gt_dir, recursive, f"{where}: clean folder"),
            where=where,
            lq_key=(lambda p: p.relative_to(lq_dir).with_suffix("").as_posix()) if recursive else stem_key,
            gt_key=(lambda p: p.relative_to(gt_dir).with_suffix("").as_posix()) if recursive else stem_key,
            strict=strict,
        )
        self.names = [p.relative_to(lq_dir).with_suffix("").as_posix() for p, _ in self.pairs]
        for listing, keep in ((subset, True), (exclude, False)):
            if listing is not None:
                self._select(read_names(listing, root), keep, f"{where}: {listing}")

    def _select(self, listed: set[str], keep: bool, where: str) -> None:
        unknown = sorted(listed - set(self.names))
        if unknown:
            message = f"{where} names {len(unknown)} pair(s) not in the folder: {_listing(unknown)}"
            warnings.warn(message, stacklevel=3)
            log.warning("%s", message)
        chosen = [i for i, name in enumerate(self.names) if (name in listed) == keep]
        self.pairs, self.names = [self.pairs[i] for i in chosen], [self.names[i] for i in chosen]

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return read_pair(*self.pairs[index])

    def image_files(self, index: int) -> tuple[Path, ...]:
        return tuple(self.pairs[index])


class SyntheticDataset(RestorationDataset):
    """Clean images from a folder, degraded on the fly by a degradation spec."""

    def __init__(
        self,
        path: str,
        degradation: Any = "noise",
        task: str = "synthetic",
        recursive: bool = True,
        seed: int = 0,
        root: str | None = None,
    ) -> None:
        folder = resolve_folder(path, root)
        self.task, self.seed = task, seed
        self.degradation = build_degradation(degradation)
        self.files = list_images(folder, recursive, "synthetic: clean folder")
        self.names = [p.relative_to(folder).with_suffix("").as_posix() for p in self.files]

    def load(self, index: int) -> tuple[None, torch.Tensor]:
        return None, read_image(self.files[index])

    def image_files(self, index: int) -> tuple[Path, ...]:
        return (self.files[index],)
