"""Tabular view of the registries, for ``restorekit list`` and users."""

from __future__ import annotations

from dataclasses import dataclass

from restorekit.deprecation import deprecated_names
from restorekit.registry import KINDS, registry


@dataclass(frozen=True)
class PartInfo:
    kind: str
    name: str
    source: str  # "builtin", "user" or "dist==version"
    status: str  # "lazy", "loaded" or "failed"
    error: str | None = None


def list_parts(kind: str | None = None) -> list[PartInfo]:
    """Every registered part (of one kind, or all), plugins read from metadata only."""
    kinds = [kind] if kind else list(KINDS)
    rows = []
    for k in kinds:
        for entry in registry(k).entries():
            # A part offered through another kind (a body as a model) says so.
            source = entry.source if entry.kind == k else f"{entry.source} ({entry.kind})"
            rows.append(PartInfo(k, entry.name, source, entry.status, entry.error))
    return rows


# Renamed in 0.2 ("part", the library's one word for a registered piece); removed in 0.3.
__getattr__ = deprecated_names(
    __name__, {"list_components": ("list_parts", list_parts), "ComponentInfo": ("PartInfo", PartInfo)}
)
