"""Tabular view of the registries, for ``restorekit list`` and users."""

from __future__ import annotations

from dataclasses import dataclass

from restorekit.registry import KINDS, registry


@dataclass(frozen=True)
class ComponentInfo:
    kind: str
    name: str
    source: str  # "builtin", "user" or "dist==version"
    status: str  # "lazy", "loaded" or "failed"
    error: str | None = None


def list_components(kind: str | None = None) -> list[ComponentInfo]:
    """Every registered part (of one kind, or all), plugins read from metadata only."""
    kinds = [kind] if kind else list(KINDS)
    rows = []
    for k in kinds:
        for entry in registry(k).entries():
            rows.append(ComponentInfo(k, entry.name, entry.source, entry.status, entry.error))
    return rows
