"""Recipe folders offered by plugins (``restorekit.recipes`` entry points), found without importing them.

An entry point names a package holding ``*.yaml`` files (``rk_film.recipes``). Its
folder is read from the distribution's file list, or else from the import system's
finders (``find_spec`` of the top-level package, which locates a package without
running it; editable installs work too). Nothing of the plugin runs: listing,
``restorekit plugins`` and every recipe lookup stay free of plugin code, as
docs/plugins.md promises. An entry point whose package cannot be found is kept
with its error and reported like any broken plugin.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from restorekit.registry import disabled_plugin_dists, dist_of, entry_points_of, normalise_dist

RECIPES_GROUP = "restorekit.recipes"


@dataclass(frozen=True)
class RecipePlugin:
    """One ``restorekit.recipes`` entry point: where its folder is, or why it is broken."""

    source: str  # "dist==version"
    entry_point: str  # "restorekit.recipes: name = package"
    folder: Path | None
    error: str | None = None


def recipe_plugins() -> list[RecipePlugin]:
    """Every enabled recipe entry point, each with its folder or its error."""
    disabled = disabled_plugin_dists()
    if disabled is None:
        return []
    found = []
    for ep in entry_points_of(RECIPES_GROUP):
        dist, version = dist_of(ep)
        if normalise_dist(dist) in disabled:
            continue
        folder, error = None, None
        try:
            folder = package_folder(ep)
        except LookupError as exc:
            error = str(exc)
        found.append(RecipePlugin(f"{dist}=={version}", f"{ep.group}: {ep.name} = {ep.value}", folder, error))
    return found


def package_folder(ep: metadata.EntryPoint) -> Path:
    """The folder of the package ``ep`` names; LookupError saying why when there is none."""
    name = ep.value.strip()
    parts = name.split(".")
    if ":" in name or not all(part.isidentifier() for part in parts):
        raise LookupError(f"{name!r} is not a package name (expected e.g. my_plugin.recipes)")
    relative = "/".join(parts)
    dist = getattr(ep, "dist", None)
    listed = (dist.files or []) if dist is not None else []
    if any(str(file).startswith(relative + "/") for file in listed):
        return Path(str(dist.locate_file(relative)))
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: located, not imported
    except (ImportError, ValueError) as exc:
        raise LookupError(f"package {parts[0]!r} cannot be located: {exc}") from exc
    if spec is None:
        raise LookupError(f"package {parts[0]!r} is not installed")
    for location in spec.submodule_search_locations or []:
        candidate = Path(location, *parts[1:])
        if candidate.is_dir():
            return candidate
    raise LookupError(f"no folder for package {name!r} (is it a package holding recipe files?)")
