"""restorekit: interchangeable parts for image-restoration models (DINO-IR first).

The public face only; importing it loads no torch-heavy module, no timm, no
open_clip and no plugin.
"""

import importlib

from restorekit.building import build, build_model, build_part
from restorekit.deprecation import warn_renamed
from restorekit.listing import list_parts
from restorekit.recipes import load_recipe
from restorekit.registry import register
from restorekit.version import __version__

__all__ = [
    "build",
    "build_model",
    "build_part",
    "load_recipe",
    "list_parts",
    "register",
    "save_pretrained",
    "from_pretrained",
    "validate",
    "__version__",
]
_LAZY = {
    "save_pretrained": "restorekit.pretrained",
    "from_pretrained": "restorekit.pretrained",
    "validate": "restorekit.engine.validate",
}


def __getattr__(name: str):  # torch is imported only when a pretrained package is used
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "list_components":  # renamed in 0.2, removed in 0.3
        warn_renamed("restorekit.list_components", "restorekit.list_parts")
        return list_parts
    raise AttributeError(f"module 'restorekit' has no attribute {name!r}")
