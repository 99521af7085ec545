"""Where each benchmark dataset comes from and where its files go: one row per download.

``restorekit data prepare NAME SOURCE`` reads this table and nothing else; the
preparer (:mod:`restorekit.data.prepare`) is the same for every row. A row names
the dataset's **home** (a folder under the data root that the preparer writes as a
whole) and its **parts**: a regular expression on each file's path inside the
download (the download's own name first, so ``SOTS/outdoor/hazy/0001_0.8_0.2.jpg``
is matched as such) and the file's place under the home (``{name}`` is the file
name, other ``{group}`` fields come from named groups of the pattern). A part
expects an exact number of files, so a wrong archive, or a truncated copy, is
caught before anything is written.

Parts with an ``id`` group are kept in step: with ``--subset`` (RESIDE OTS) the
first part is filtered by the list and the others keep the ids it still uses.

Checksums: none of these authors publishes one, so ``sha256`` is empty everywhere;
where an author does, the row lists it and the preparer checks the archive.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from restorekit.errors import DataError

IMAGE = r"\.(?:png|jpe?g|bmp|tiff?)"


@dataclass(frozen=True)
class Part:
    """One kind of file in a download: which paths, where they go, how many."""

    what: str  # for messages, e.g. "rainy images"
    pattern: str  # regex searched in the path inside the download (case-insensitive)
    target: str  # place under the home, e.g. "rainy/{name}" or "train/{scene}/blur/{name}"
    counts: tuple[int, ...] = ()  # accepted file counts; empty: any number > 0

    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    """One dataset download: where its authors publish it and how it maps to the protocol layout."""

    name: str
    title: str
    home: str  # folder under the data root, written as a whole
    parts: tuple[Part, ...]
    published_by: str  # where its authors publish it (by name and page)
    published_as: str  # the file(s) they publish
    size: str  # as published; "not stated" when the authors state none; "not recorded" when unchecked
    licence: str  # as published; "not stated" when the authors state none; "not recorded" when unchecked
    check: Mapping[str, Any]  # the data section tasks `data check` runs on the result
    aliases: tuple[str, ...] = ()
    sha256: Mapping[str, str] = field(default_factory=dict)  # archive file name -> published checksum
    needs_subset: bool = False  # RESIDE OTS: --subset LIST (or all)
    note: str = ""


def _any_images(what: str, count: int) -> tuple[Part, ...]:
    return (Part(what, rf"(?:^|/)[^/]+{IMAGE}$", "{name}", (count,)),)


SOURCES: tuple[Source, ...] = (
    Source(
        name="bsd400",
        title="BSD400 (400 Berkeley Segmentation Dataset images, denoising train)",
        home="denoise/train/BSD400",
        parts=_any_images("images", 400),
        published_by="the 'BSD400' Google Drive file linked from PromptIR's INSTALL.md (github.com/va1shn9v/PromptIR)"
        "; the images come from the Berkeley Segmentation Dataset (BSDS300/500, UC Berkeley)",
        published_as="one archive (Google Drive file) of 400 images",
        size="not recorded",
        licence="not recorded",
        check={"denoise": {"type": "denoise", "split": "train", "path": "denoise/train/BSD400"}},
    ),
    Source(
        name="wed",
        title="Waterloo Exploration Database, 4,744 pristine images (denoising train)",
        home="denoise/train/WED",
        parts=(Part("pristine images", r"(?:^|/)pristine_images/\d{5}\.bmp$", "{name}", (4744,)),),
        published_by="the Waterloo Exploration Database project page (Ma et al., University of Waterloo, "
        "ece.uwaterloo.ca/~k29ma/exploration/); AdaIR's INSTALL.md links a Google Drive copy",
        published_as="exploration_database_and_code.rar (a .rar: unpack it, pass the folder)",
        size="not recorded",
        licence="not recorded",
        check={"denoise": {"type": "denoise", "split": "train", "path": "denoise/train/WED"}},
    ),
    Source(
        name="cbsd68",
        title="CBSD68, 68 colour BSD images (denoising test)",
        home="denoise/test/CBSD68",
        parts=(Part("images", rf"^(?!(?:.*/)?noisy[^/]*/)(?:.*/)?[^/]+{IMAGE}$", "{name}", (68,)),),
        aliases=("bsd68",),
        published_by="the BSD68 test set of the denoising literature (Roth & Black's 68 BSDS images); "
        "PromptIR and AdaIR use it as test/denoise/bsd68; colour copies ship with DnCNN/FFDNet/Restormer's test sets",
        published_as="a folder of 68 images (in several test-set archives)",
        size="not recorded",
        licence="not recorded",
        check={"denoise": {"type": "denoise", "split": "test", "test_set": "CBSD68"}},
        note="a copy holding noisy versions too keeps them in noisy*/ folders, which are skipped",
    ),
    Source(
        name="urban100",
        title="Urban100, 100 urban scenes (denoising test, optional)",
        home="denoise/test/Urban100",
        parts=(Part("images", r"(?:^|/)img_\d{3}\.png$", "{name}", (100,)),),
        published_by="Huang, Singh, Ahuja (CVPR 2015); the Google Drive folder linked from PromptIR's and AdaIR's INSTALL.md",
        published_as="a folder of img_001.png ... img_100.png",
        size="not recorded",
        licence="not recorded",
        check={"denoise": {"type": "denoise", "split": "test", "test_set": "Urban100"}},
    ),
    Source(
        name="kodak24",
        title="Kodak24, 24 Kodak PhotoCD images (denoising test, optional)",
        home="denoise/test/Kodak24",
        parts=(Part("images", r"(?:^|/)kodim\d{2}\.png$", "{name}", (24,)),),
        published_by="Rich Franzen's page of the Kodak images (r0k.us/graphics/kodak/), linked from AdaIR's INSTALL.md",
        published_as="24 separate PNG files (download them into one folder and pass the folder)",
        size="not recorded",
        licence="not recorded",
        check={"denoise": {"type": "denoise", "split": "test", "test_set": "Kodak24"}},
    ),
    Source(
        name="rain100l-train",
        title="Rain100L train ('Train100L'), 200 pairs (deraining train)",
        home="derain/train",
        parts=(
            Part("rainy images", r"(?:^|/)rain-\d+\.png$", "rainy/{name}", (200,)),
            Part("clean images", r"(?:^|/)norain-\d+\.png$", "gt/{name}", (200,)),
        ),
        aliases=("train100l",),
        published_by="Yang et al. (JORDER, CVPR 2017); the 'Train100L&Rain100L' Google Drive folder linked from "
        "PromptIR's and AdaIR's INSTALL.md",
        published_as="rainy/rain-N.png and gt/norain-N.png (PromptIR's data/Train/Derain), or both in one folder",
        size="not recorded",
        licence="not recorded",
        check={"derain": {"type": "derain", "split": "train"}},
    ),
    Source(
        name="rain100l-test",
        title="Rain100L test, 100 pairs (deraining test)",
        home="derain/test",
        parts=(
            Part("rainy images", r"(?:^|/)(?:(?:input|rainy|rain)/\d+|rain-\d+)\.png$", "rainy/{name}", (100,)),
            Part("clean images", r"(?:^|/)(?:(?:target|gt|norain)/\d+|norain-\d+)\.png$", "gt/{name}", (100,)),
        ),
        aliases=("rain100l",),
        published_by="Yang et al. (JORDER, CVPR 2017); the 'Train100L&Rain100L' Google Drive folder linked from "
        "PromptIR's and AdaIR's INSTALL.md",
        published_as="input/N.png and target/N.png (PromptIR's test/derain/Rain100L), or rain-N.png / norain-N.png",
        size="not recorded",
        licence="not recorded",
        check={"derain": {"type": "derain", "split": "test"}},
    ),
    Source(
        name="rain100h-train",
        title="Rain100H train, 1,800 pairs (1,254 in PReNet's de-duplicated copy); not in the protocol",
        home="rain100h/train",
        parts=(
            Part("rainy images", r"(?:^|/)rain-\d+\.png$", "rainy/{name}", (1800, 1254)),
            Part("clean images", r"(?:^|/)norain-\d+\.png$", "gt/{name}", (1800, 1254)),
        ),
        published_by="Yang et al. (JORDER, CVPR 2017), Rain100H; the copies distributed with PReNet (Ren et al., CVPR 2019)",
        published_as="rain-N.png and norain-N.png",
        size="not recorded",
        licence="not recorded",
        check={"derain": {"type": "derain", "split": "train", "path": "rain100h/train"}},
    ),
    Source(
        name="rain100h-test",
        title="Rain100H test, 100 pairs; not in the protocol",
        home="rain100h/test",
        parts=(
            Part("rainy images", r"(?:^|/)(?:(?:input|rainy|rain)/\d+|rain-\d+)\.png$", "rainy/{name}", (100,)),
            Part("clean images", r"(?:^|/)(?:(?:target|gt|norain)/\d+|norain-\d+)\.png$", "gt/{name}", (100,)),
        ),
        aliases=("rain100h",),
        published_by="Yang et al. (JORDER, CVPR 2017), Rain100H; the copies distributed with PReNet (Ren et al., CVPR 2019)",
        published_as="rain-N.png and norain-N.png, or input/ and target/",
        size="not recorded",
        licence="not recorded",
        check={"derain": {"type": "derain", "split": "test", "path": "rain100h/test"}},
    ),
    Source(
        name="sots-outdoor",
        title="RESIDE SOTS outdoor, 500 pairs (dehazing test)",
        home="dehaze/test",
        parts=(
            Part("hazy images", r"(?:^|/)outdoor/hazy/\d{4}_[\d.]+_[\d.]+\.(?:jpg|png)$", "hazy/{name}", (500,)),
            Part("clear images", r"(?:^|/)outdoor/(?:gt|clear)/\d{4}\.(?:jpg|png)$", "gt/{name}", (500,)),
        ),
        aliases=("sots",),
        published_by="the RESIDE project page (Li et al., sites.google.com/view/reside-dehaze-datasets), "
        "SOTS in RESIDE-Standard (v0)",
        published_as="SOTS archive with outdoor/hazy/ and outdoor/gt/ (outdoor.zip inside it)",
        size="not recorded",
        licence="not recorded",
        check={"dehaze": {"type": "dehaze", "split": "test"}},
    ),
    Source(
        name="sots-indoor",
        title="RESIDE SOTS indoor, 500 hazy images of 50 scenes; not in the protocol",
        home="sots-indoor/test",
        parts=(
            Part("hazy images", r"(?:^|/)indoor/hazy/\d+_\d+\.png$", "hazy/{name}", (500,)),
            Part("clear images", r"(?:^|/)indoor/(?:gt|clear)/\d+\.png$", "gt/{name}", (50,)),
        ),
        published_by="the RESIDE project page (Li et al., sites.google.com/view/reside-dehaze-datasets), "
        "SOTS in RESIDE-Standard (v0)",
        published_as="SOTS archive with indoor/hazy/ and indoor/gt/ (indoor.rar inside it: unpack it first)",
        size="not recorded",
        licence="not recorded",
        check={"dehaze": {"type": "dehaze", "split": "test", "path": "sots-indoor/test"}},
    ),
    Source(
        name="reside-ots",
        title="RESIDE OTS, the protocol's subset: 72,135 hazy images of 2,061 scenes (dehazing train)",
        home="dehaze/train",
        parts=(
            Part("hazy images", r"(?:^|/)(?P<id>\d{4})_[\d.]+_[\d.]+\.jpg$", "hazy/{name}"),
            Part(
                "clear images", r"(?:^|/)(?:clear|gt|original)[^/]*/(?:.*/)?(?P<id>\d{4})\.(?:jpg|png)$", "clear/{name}"
            ),
        ),
        aliases=("ots",),
        published_by="the RESIDE project page (Li et al., sites.google.com/view/reside-dehaze-datasets), OTS; "
        "the subset is the list data_dir/hazy/hazy_outside.txt in PromptIR's and AdaIR's repositories",
        published_as="OTS in parts (part1..part4 of hazy images, plus the clear images)",
        size="not recorded",
        licence="not recorded",
        check={"dehaze": {"type": "dehaze", "split": "train"}},
        needs_subset=True,
        note="--subset hazy_outside.txt keeps the 72,135 listed images; --subset all keeps every image",
    ),
    Source(
        name="gopro",
        title="GoPro (Nah et al.), 2,103 train and 1,111 test pairs (deblurring)",
        home="deblur",
        parts=(
            Part(
                "train blurry images",
                r"(?:^|/)train/(?P<scene>[^/]+)/blur/\d+\.png$",
                "train/{scene}/blur/{name}",
                (2103,),
            ),
            Part(
                "train sharp images",
                r"(?:^|/)train/(?P<scene>[^/]+)/sharp/\d+\.png$",
                "train/{scene}/sharp/{name}",
                (2103,),
            ),
            Part(
                "test blurry images",
                r"(?:^|/)test/(?P<scene>[^/]+)/blur/\d+\.png$",
                "test/{scene}/blur/{name}",
                (1111,),
            ),
            Part(
                "test sharp images",
                r"(?:^|/)test/(?P<scene>[^/]+)/sharp/\d+\.png$",
                "test/{scene}/sharp/{name}",
                (1111,),
            ),
        ),
        published_by="Nah, Kim, Lee (DeepDeblur, CVPR 2017), the GoPro dataset page (seungjunnah.github.io/Datasets/gopro); "
        "AdaIR's INSTALL.md links a Google Drive copy",
        published_as="GOPRO_Large.zip: GOPRO_Large/{train,test}/<scene>/{blur,blur_gamma,sharp}/NNNNNN.png",
        size="not recorded",
        licence="not recorded",
        check={
            "deblur_train": {"type": "deblur", "split": "train"},
            "deblur_test": {"type": "deblur", "split": "test"},
        },
        note="blur_gamma/ is not used by the protocol and is skipped",
    ),
    Source(
        name="lol",
        title="LOL-v1 (Wei et al.), 485 train and 15 test pairs (low-light enhancement)",
        home="lowlight",
        parts=(
            Part("train low-light images", r"(?:^|/)our485/low/\d+\.png$", "train/low/{name}", (485,)),
            Part("train normal-light images", r"(?:^|/)our485/high/\d+\.png$", "train/high/{name}", (485,)),
            Part("test low-light images", r"(?:^|/)eval15/low/\d+\.png$", "test/low/{name}", (15,)),
            Part("test normal-light images", r"(?:^|/)eval15/high/\d+\.png$", "test/high/{name}", (15,)),
        ),
        aliases=("lol-v1",),
        published_by="Wei, Wang, Yang, Liu (Retinex-Net, BMVC 2018), the project page daooshee.github.io/BMVC2018website/",
        published_as="LOLdataset.zip: our485/{low,high}/N.png and eval15/{low,high}/N.png",
        size="not recorded",
        licence="not recorded",
        check={
            "lowlight_train": {"type": "lowlight", "split": "train"},
            "lowlight_test": {"type": "lowlight", "split": "test"},
        },
    ),
)


def find_source(name: str) -> Source:
    """The row named ``name`` (or one of its aliases), case-insensitive; a DataError with close matches."""
    wanted = name.lower()
    for source in SOURCES:
        if wanted == source.name or wanted in source.aliases:
            return source
    known = [s.name for s in SOURCES]
    close = difflib.get_close_matches(wanted, known + [a for s in SOURCES for a in s.aliases], n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise DataError(f"unknown dataset {name!r}{hint} (known: {', '.join(known)}; `restorekit data prepare --list`)")
