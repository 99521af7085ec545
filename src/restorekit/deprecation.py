"""Renamed public names keep their old name for one minor version, with a DeprecationWarning.

A module lists its old names (``old -> new object``) and sets
``__getattr__ = deprecated_names(__name__, {...})`` (PEP 562): the old name still
works, says what replaces it and when it goes (CHANGELOG.md lists every one).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

REMOVED_IN = "0.3"


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """The one wording of a rename's DeprecationWarning."""
    warnings.warn(
        f"{old} is deprecated; use {new} instead ({old} will be removed in restorekit {REMOVED_IN})",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def deprecated_names(module: str, renamed: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving each old name (``old -> (new name, object)``) with a warning."""

    def __getattr__(name: str) -> Any:
        if name in renamed:
            new, obj = renamed[name]
            warn_renamed(f"{module}.{name}", f"{module}.{new}" if "." not in new else new)
            return obj
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
