"""PromptIR's and AdaIR's data trees, read as they are: ``data.layout: promptir | adair``.

Both repositories keep training data in ``data/Train/<Task>/`` and the lists of
the images they train on in ``data_dir/`` (``noisy/denoise.txt``,
``rainy/rainTrain.txt``, ``hazy/hazy_outside.txt``); PromptIR keeps its test sets
in ``test/``, AdaIR in ``data/test/``. With a layout, ``data.root`` is the
repository folder (default: the working folder) and each protocol dataset reads
the folder and the list that repository's code reads; a ``path:`` written in a
spec still wins. ``data.layout`` left out is detected: a root holding
``data_dir/`` and ``data/Train/`` is AdaIR's when ``data/test/`` exists, else
PromptIR's; anything else is restorekit's own layout (docs/data.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("restorekit.data")

LAYOUTS = ("restorekit", "promptir", "adair")
PROTOCOL_TYPES = ("denoise", "derain", "dehaze", "deblur", "lowlight")

_TRAIN = {
    ("denoise", "train"): ("data/Train/Denoise", "data_dir/noisy/denoise.txt"),
    ("derain", "train"): ("data/Train/Derain", "data_dir/rainy/rainTrain.txt"),
    ("dehaze", "train"): ("data/Train/Dehaze", "data_dir/hazy/hazy_outside.txt"),
}
# (dataset type, split) -> (folder under the root, list of the images used or None)
FOLDERS: dict[str, dict[tuple[str, str], tuple[str, str | None]]] = {
    "promptir": {
        **_TRAIN,
        ("denoise", "test"): ("test/denoise/{test_set}", None),
        ("derain", "test"): ("test/derain/Rain100L", None),
        ("dehaze", "test"): ("test/dehaze", None),
    },
    "adair": {
        **_TRAIN,
        ("deblur", "train"): ("data/Train/Deblur", None),
        ("lowlight", "train"): ("data/Train/Enhance", None),
        ("denoise", "test"): ("data/test/denoise/{test_set}", None),
        ("derain", "test"): ("data/test/derain/Rain100L", None),
        ("dehaze", "test"): ("data/test/dehaze", None),
        ("deblur", "test"): ("data/test/deblur/gopro", None),
        ("lowlight", "test"): ("data/test/enhance/lol", None),
    },
}
# restorekit's test_set names -> the folder names of PromptIR's and AdaIR's trees
TEST_SET_FOLDERS = {"CBSD68": "bsd68", "BSD68": "bsd68", "Urban100": "urban100", "Kodak24": "kodak24"}


def detect_layout(root: str | None) -> str:
    """The layout of the tree at ``root`` (see the module doc)."""
    base = Path(root or ".").expanduser()
    if (base / "data_dir").is_dir() and (base / "data" / "Train").is_dir():
        return "adair" if (base / "data" / "test").is_dir() else "promptir"
    return "restorekit"


def layout_kwargs(layout: str, type_name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A protocol dataset's keywords with the ``path`` (and ``subset``) the layout reads.

    Keywords written in the spec win; types the layout does not know are returned unchanged,
    and a split it has no folder for is left to the dataset (which names the folder it missed).
    """
    out = dict(kwargs)
    if layout == "restorekit" or type_name not in PROTOCOL_TYPES or "path" in out:
        return out
    split = out.get("split", "train")
    found = FOLDERS[layout].get((type_name, split))
    if found is None:
        return out
    folder, listing = found
    test_set = str(out.get("test_set", "CBSD68"))
    out["path"] = folder.format(test_set=TEST_SET_FOLDERS.get(test_set, test_set.lower()))
    if listing is not None and "subset" not in out:
        out["subset"] = listing
    return out
