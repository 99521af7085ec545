"""Deprecated alias of :mod:`restorekit.io.image_files` (moved in 0.2, removed in 0.3)."""

from __future__ import annotations

from typing import Any

from restorekit.deprecation import warn_renamed
from restorekit.io import image_files as _moved


def __getattr__(name: str) -> Any:  # warns on use, not on import (no import-time side effect)
    value = getattr(_moved, name)  # AttributeError for a name the module never had
    warn_renamed(f"{__name__}.{name}", f"{_moved.__name__}.{name}")
    return value
