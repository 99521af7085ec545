"""Deprecated alias of :mod:`restorekit.io.state_dict` (moved in 0.2, removed in 0.3)."""

from __future__ import annotations

from restorekit.deprecation import deprecated_names
from restorekit.io import state_dict as _moved

# Every public name of the moved module, served with a DeprecationWarning (no import-time side effect).
__getattr__ = deprecated_names(
    __name__, {name: (f"{_moved.__name__}.{name}", getattr(_moved, name)) for name in _moved.__all__}
)
