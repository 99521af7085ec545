"""Data: degradations, datasets, the training stream, image IO.

Light on import: the names below load their module (and torch) when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_train_stream": "restorekit.data.build",
    "build_eval_sets": "restorekit.data.build",
    "TrainStream": "restorekit.data.stream",
    "build_degradation": "restorekit.data.degradations",
    "read_image": "restorekit.io.image_files",
    "load_image": "restorekit.io.image_files",
    "write_image": "restorekit.io.image_files",
    "load_sample": "restorekit.data.samples",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'restorekit.data' has no attribute {name!r}")
