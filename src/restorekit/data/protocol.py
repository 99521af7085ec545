"""The all-in-one protocol datasets, read from the field's standard folder layouts.

Each dataset reads ``<root>/<task>/<split>/`` (``path`` points elsewhere) and
accepts the folder names of the official releases and of PromptIR's layout;
``docs/data.md`` says exactly where each download goes. A missing folder or an
empty one is a DataError naming it.

=========  ==========================================  ===================================
task       train                                        test
=========  ==========================================  ===================================
denoise    BSD400 + WED clean images, noise on the fly  CBSD68, fixed-seed noise per sigma
derain     Rain100L train (200 pairs)                   Rain100L test (100 pairs)
dehaze     RESIDE OTS (hazy/ + clear/)                  SOTS outdoor (500 pairs)
deblur     GoPro train (scene/blur, scene/sharp)        GoPro test (1111 pairs)
lowlight   LOL-v1 our485 (low/, high/)                  LOL-v1 eval15
=========  ==========================================  ===================================
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from restorekit.data.datasets import (
    RestorationDataset,
    list_images,
    pair_files,
    read_image,
    read_pair,
    resolve_folder,
    stem_key,
)
from restorekit.data.degradations import GaussianNoise
from restorekit.errors import DataError

log = logging.getLogger("restorekit.data")
SPLITS = ("train", "test")
DEFAULT_ROOT = "data"


def split_folder(task: str, split: str, root: str | None, path: str | None) -> Path:
    """``path`` if given, else ``<root>/<task>/<split>``; the folder must exist."""
    if split not in SPLITS:
        raise DataError(f"{task}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = resolve_folder(path, root) if path else resolve_folder(f"{task}/{split}", root or DEFAULT_ROOT)
    if not folder.is_dir():
        raise DataError(f"{task} {split} folder not found: {folder} (see docs/data.md for the layout)")
    return folder


def read_subset(subset: str | None, root: str | None) -> set[str] | None:
    """The file names a list file keeps (one path a line, as in PromptIR's ``data_dir/*.txt``), or None.

    A relative list path is under the data root; only each line's file name is used.
    """
    if subset is None:
        return None
    listing = resolve_folder(subset, root)
    if not listing.is_file():
        raise DataError(f"subset list not found: {listing}")
    return {Path(line.strip()).name for line in listing.read_text().splitlines() if line.strip()}


def report_unlisted(names: set[str], used: set[str], where: str, subset: str | None) -> None:
    """Listed files the folder does not hold are reported (as a warning), never dropped silently."""
    missing = sorted(names - used)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        message = f"{where}: {len(missing)} file(s) listed in {subset} are not in the folder: {shown}"
        warnings.warn(message, stacklevel=3)
        log.warning("%s", message)


def find_subfolder(base: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``names`` that exists under ``base``; a DataError naming them all otherwise."""
    for name in names:
        if (base / name).is_dir():
            return base / name
    others = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
    raise DataError(f"{what} folder not found: {base / names[0]}{others}")


class PairedProtocolDataset(RestorationDataset):
    """Real (degraded, clean) pairs found in one split folder."""

    task_name = "restore"
    lq_folders: tuple[str, ...] = ("lq",)
    gt_folders: tuple[str, ...] = ("gt",)
    many_to_one = False
    recursive_lq = False

    def __init__(
        self,
        split: str = "train",
        root: str | None = None,
        path: str | None = None,
        task: str | None = None,
        strict: bool = True,
        align: str = "exact",
        subset: str | None = None,
    ) -> None:
        self.task = task or self.task_name
        self.split, self.align = split, align
        base = split_folder(self.task_name, split, root, path)
        self.listed = read_subset(subset, root)
        self.pairs = self.find_pairs(base, strict)
        if self.listed is not None:
            report_unlisted(self.listed, {lq.name for lq, _ in self.pairs}, f"{self.task_name} {split}", subset)
        if not self.pairs:
            raise DataError(f"{self.task_name} {split}: no image pairs found in {base}")
        self.names = [self.pair_name(lq) for lq, _ in self.pairs]
        log.info("%s %s: %d pairs in %s", self.task_name, split, len(self.pairs), base)

    def find_pairs(self, base: Path, strict: bool) -> list[tuple[Path, Path]]:
        what = f"{self.task_name} {self.split}"
        lq_dir = find_subfolder(base, self.lq_folders, f"{what} degraded")
        gt_dir = find_subfolder(base, self.gt_folders, f"{what} clean")
        lq_files = list_images(lq_dir, self.recursive_lq, f"{what} degraded folder")
        gt_files = list_images(gt_dir, False, f"{what} clean folder")
        if self.listed is not None:  # the listed degraded files, and the clean files they use
            lq_files = [p for p in lq_files if p.name in self.listed]
            keys = {self.lq_key(p) for p in lq_files}
            gt_files = [p for p in gt_files if self.gt_key(p) in keys]
        return pair_files(
            lq_files,
            gt_files,
            where=f"{what} ({base})",
            lq_key=self.lq_key,
            gt_key=self.gt_key,
            many_to_one=self.many_to_one,
            strict=strict,
        )

    lq_key: Callable[[Path], str] = staticmethod(stem_key)
    gt_key: Callable[[Path], str] = staticmethod(stem_key)

    def pair_name(self, lq: Path) -> str:
        return lq.stem

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return read_pair(*self.pairs[index], align=self.align)

    def image_files(self, index: int) -> tuple[Path, ...]:
        return tuple(self.pairs[index])


_RAIN_PREFIX = re.compile(r"^(no)?rain(y)?[-_]?", re.IGNORECASE)


def rain_key(path: Path) -> str:
    """``rain-12``, ``rainy-012``, ``norain-12`` and ``12`` all give ``12``."""
    key = _RAIN_PREFIX.sub("", path.stem)
    return str(int(key)) if key.isdigit() else key


class DerainDataset(PairedProtocolDataset):
    """Rain100L: ``rainy/rain-N.png`` with ``gt/norain-N.png`` (PromptIR: ``input/``, ``target/``)."""

    task_name = "derain"
    lq_folders = ("rainy", "input", "rain")
    gt_folders = ("gt", "norain", "target")
    lq_key = staticmethod(rain_key)
    gt_key = staticmethod(rain_key)


def haze_key(path: Path) -> str:
    """RESIDE names hazy images ``<id>_<A>_<beta>``: ``0025_0.8_0.1.jpg`` pairs with ``0025.jpg``."""
    return path.stem.split("_")[0]


class DehazeDataset(PairedProtocolDataset):
    """RESIDE OTS (train) and SOTS outdoor (test): ``hazy/`` (searched recursively) and ``clear/``.

    Several hazy images share one clear image. Sizes that differ (SOTS ground
    truths can carry a border) are centre-cropped to the common size.
    """

    task_name = "dehaze"
    lq_folders = ("hazy", "synthetic", "input")
    gt_folders = ("clear", "gt", "original", "target")
    many_to_one = True
    recursive_lq = True
    lq_key = staticmethod(haze_key)

    def __init__(
        self,
        split: str = "train",
        root: str | None = None,
        path: str | None = None,
        task: str | None = None,
        strict: bool = True,
        align: str = "center",
        subset: str | None = None,
    ) -> None:
        super().__init__(split=split, root=root, path=path, task=task, strict=strict, align=align, subset=subset)


class LowLightDataset(PairedProtocolDataset):
    """LOL-v1: ``low/`` and ``high/`` (``our485`` is train, ``eval15`` is test; AdaIR: ``low/``, ``gt/``)."""

    task_name = "lowlight"
    lq_folders = ("low", "Low", "input")
    gt_folders = ("high", "normal", "Normal", "target", "gt")


class DeblurDataset(PairedProtocolDataset):
    """GoPro: one folder per scene, each with ``blur/`` and ``sharp/``.

    A split folder that holds ``blur/`` and ``sharp/`` (or ``input/`` and
    ``target/``, Restormer's layout) directly is read as one scene.
    """

    task_name = "deblur"
    lq_folders = ("blur", "input")
    gt_folders = ("sharp", "target", "gt")

    def find_pairs(self, base: Path, strict: bool) -> list[tuple[Path, Path]]:
        if any((base / n).is_dir() for n in self.lq_folders):
            scenes = [base]
        else:
            scenes = sorted(p for p in base.iterdir() if p.is_dir() and any((p / n).is_dir() for n in self.lq_folders))
            if not scenes:
                raise DataError(
                    f"deblur {self.split}: no scene folders with blur/ and sharp/ in {base} (see docs/data.md)"
                )
        self._base = base
        pairs: list[tuple[Path, Path]] = []
        for scene in scenes:
            pairs.extend(super().find_pairs(scene, strict))
        return pairs

    def pair_name(self, lq: Path) -> str:
        scene = lq.parent.parent
        return lq.stem if scene == self._base else f"{scene.name}/{lq.stem}"


class DenoiseDataset(RestorationDataset):
    """Clean images plus Gaussian noise: BSD400 + WED for training, CBSD68 for testing.

    Train reads every image under ``<root>/denoise/train/`` (``BSD400/`` and
    ``WED/`` inside); test reads ``<root>/denoise/test/<test_set>/``. Noise is
    the field's uint8 pipeline at ``sigma`` (a list draws one per image); test
    images get fixed-seed noise, the same on every run.
    """

    def __init__(
        self,
        split: str = "train",
        sigma: float | Sequence[float] = 25,
        mode: str = "uint8",
        test_set: str = "CBSD68",
        root: str | None = None,
        path: str | None = None,
        task: str | None = None,
        seed: int = 0,
        subset: str | None = None,
    ) -> None:
        self.task, self.split, self.seed = task or "denoise", split, seed
        self.degradation = GaussianNoise(sigma=sigma, mode=mode)
        base = split_folder("denoise", split, root, path)
        folder = base if (path or split == "train") else find_subfolder(base, (test_set,), f"denoise {split} set")
        self.files = list_images(folder, recursive=True, what=f"denoise {split} folder")
        listed = read_subset(subset, root)
        if listed is not None:
            # PromptIR's denoise.txt names the BSD400 images "a<id>.jpg", the files are "<id>.jpg"
            # (AdaIR issue #4): both spellings keep the file.
            self.files = [p for p in self.files if p.name in listed or f"a{p.name}" in listed]
            used = {p.name for p in self.files} | {f"a{p.name}" for p in self.files}
            report_unlisted(listed, used, f"denoise {split}", subset)
        if not self.files:
            raise DataError(f"denoise {split}: no images found in {folder}")
        self.names = [p.relative_to(folder).with_suffix("").as_posix() for p in self.files]
        groups = Counter(Path(n).parts[0] if len(Path(n).parts) > 1 else "." for n in self.names)
        detail = ", ".join(f"{g}: {c}" for g, c in sorted(groups.items())) if len(groups) > 1 else ""
        log.info(
            "denoise %s: %d clean images in %s%s", split, len(self.files), folder, f" ({detail})" if detail else ""
        )

    def load(self, index: int) -> tuple[None, torch.Tensor]:
        return None, read_image(self.files[index])

    def image_files(self, index: int) -> tuple[Path, ...]:
        return (self.files[index],)
