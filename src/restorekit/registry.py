"""Registries of parts, with lazy builtins and entry-point plugins.

One :class:`Registry` per kind of part. A part is registered by decorator
(``@FUSIONS.register("msf")``) or lazily by a ``"module:attr"`` target, so that
listing parts imports nothing heavy. Plugins are found through
``importlib.metadata`` entry points (group ``restorekit.<kind>s``); finding reads
metadata only, loading happens when a part is asked for (the split flake8's
plugin finder makes). A broken plugin is recorded, never raised while listing.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata as metadata
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from restorekit.catalog import BUILTINS
from restorekit.errors import (
    AmbiguousPartError,
    DuplicatePartError,
    PartLoadError,
    UnknownPartError,
)

KINDS: tuple[str, ...] = (
    "backbone",
    "fusion",
    "adapter",
    "body",
    "model",
    "loss",
    "metric",
    "optimizer",
    "schedule",
    "logger",
    "callback",
    "degradation",
    "dataset",
)

DISABLE_ENV = "RESTOREKIT_DISABLE_PLUGINS"

# Kinds whose every part is also a part of another kind: a body is a complete restoration
# model on its own (the baselines), so ``build("model", "restormer")`` and
# ``restorekit list model`` reach the body registry; nothing is registered twice.
INCLUDED_KINDS: dict[str, tuple[str, ...]] = {"model": ("body",)}

# Kinds whose parts are torch modules: a plugin class for them must subclass nn.Module.
MODULE_KINDS = {"backbone", "fusion", "adapter", "body", "model", "loss"}


_PLURALS = {"body": "bodies", "loss": "losses"}


def entry_point_group(kind: str) -> str:
    """The entry-point group a plugin uses to add parts of ``kind`` (``restorekit.fusions``)."""
    return f"restorekit.{_PLURALS.get(kind, kind + 's')}"


def disabled_plugin_dists() -> set[str] | None:
    """Distributions switched off by ``RESTOREKIT_DISABLE_PLUGINS``.

    Returns ``None`` when every plugin is off ("1", "true", "all", "yes"),
    otherwise the (normalised) distribution names listed, possibly empty.
    """
    value = os.environ.get(DISABLE_ENV, "").strip()
    if value.lower() in {"1", "true", "all", "yes", "on"}:
        return None
    return {normalise_dist(part) for part in value.split(",") if part.strip()}


def normalise_dist(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def import_target(target: str) -> Any:
    """Import ``"package.module:attr"`` (attr may be dotted) and return the object."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target {target!r} is not of the form 'module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class Entry:
    """One registered part: where it comes from and, once loaded, the object."""

    name: str
    kind: str
    source: str  # "builtin", "user" or "dist==version"
    target: str | None = None
    obj: Any = None
    dist: str | None = None
    version: str | None = None
    entry_point: str | None = None
    error: str | None = None
    shadowed: bool = False  # a plugin whose name a builtin already holds

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "loaded" if self.obj is not None else "lazy"

    @property
    def where(self) -> str:
        """Human description of where the part lives, for errors and listings."""
        if self.entry_point:
            return f"{self.source} (entry point {self.entry_point})"
        if self.target:
            return f"{self.source} ({self.target})"
        obj = self.obj
        module = getattr(obj, "__module__", "?")
        qual = getattr(obj, "__qualname__", repr(obj))
        return f"{self.source} ({module}:{qual})"


@dataclass
class Registry:
    """Name -> part for one kind, with builtins, user registrations and plugins."""

    kind: str
    includes: tuple[str, ...] = ()  # kinds whose parts this kind also offers (own names win)
    _entries: dict[str, Entry] = field(default_factory=dict)
    _plugins_found: bool = False
    _plugin_disable_key: Any = None

    @property
    def group(self) -> str:
        return entry_point_group(self.kind)

    # -- registration -------------------------------------------------------------
    def register(
        self,
        name: str | None = None,
        obj: Any = None,
        *,
        target: str | None = None,
        source: str = "user",
        replace: bool = False,
    ) -> Callable[[Any], Any]:
        """Register a part by decorator, directly, or lazily by ``target``.

        ``@REG.register("name")`` decorates; ``REG.register("name", obj)`` registers
        now; ``REG.register("name", target="mod:attr")`` defers the import.
        A name that is taken raises :class:`DuplicatePartError` saying where
        the existing part lives, unless ``replace=True``.
        """
        if target is not None:
            if name is None:
                raise ValueError("a lazy registration needs a name")
            self._add(Entry(name=name, kind=self.kind, source=source, target=target), replace)
            return lambda x: x
        if obj is not None:
            self._add(Entry(name=name or obj.__name__, kind=self.kind, source=source, obj=obj), replace)
            return lambda x: x

        def decorator(part: Any) -> Any:
            self._add(Entry(name=name or part.__name__, kind=self.kind, source=source, obj=part), replace)
            return part

        return decorator

    def unregister(self, name: str) -> None:
        """Remove a name (tests and interactive sessions use this)."""
        self._entries.pop(name, None)

    def _add(self, entry: Entry, replace: bool) -> None:
        existing = self._entries.get(entry.name)
        if existing is not None and not replace:
            raise DuplicatePartError(
                f"{self.kind} {entry.name!r} is already registered by {existing.where}; "
                f"pick another name or pass replace=True"
            )
        self._entries[entry.name] = entry

    # -- plugins ------------------------------------------------------------------
    def _find_plugins(self) -> None:
        """Read entry-point metadata (imports nothing) and record plugin parts."""
        disabled = disabled_plugin_dists()
        key = None if disabled is None else tuple(sorted(disabled))
        if self._plugins_found and key == self._plugin_disable_key:
            return
        self.refresh()  # forget plugins found under another switch setting
        self._plugins_found = True
        self._plugin_disable_key = key
        if disabled is None:
            return
        claims: dict[str, list[Entry]] = {}
        for ep in entry_points_of(self.group):
            dist_name, version = dist_of(ep)
            if normalise_dist(dist_name) in disabled:
                continue
            entry = Entry(
                name=ep.name,
                kind=self.kind,
                source=f"{dist_name}=={version}",
                target=ep.value,
                dist=dist_name,
                version=version,
                entry_point=f"{ep.group}: {ep.name} = {ep.value}",
            )
            claims.setdefault(ep.name, []).append(entry)
        for name, entries in claims.items():
            for entry in entries:
                # Every plugin part is reachable as "dist/name".
                self._entries[f"{entry.dist}/{name}"] = entry
            builtin = self._entries.get(name)
            if builtin is not None and not builtin.entry_point:
                for entry in entries:
                    entry.shadowed = True
                    warnings.warn(
                        f"plugin {entry.source} registers {self.kind} {name!r}, which "
                        f"{builtin.where} already provides; the builtin stays under "
                        f"{name!r}, the plugin is reachable as {entry.dist + '/' + name!r}",
                        stacklevel=3,
                    )
                continue
            if len(entries) == 1:
                self._entries[name] = entries[0]
            else:
                self._entries[name] = Entry(
                    name=name,
                    kind=self.kind,
                    source="ambiguous",
                    error="ambiguous: " + ", ".join(e.source for e in entries),
                    entry_point="; ".join(e.entry_point or "" for e in entries),
                    target=None,
                )

    def refresh(self) -> None:
        """Forget discovered plugins; the next lookup reads entry-point metadata again."""
        self._plugins_found = False
        self._plugin_disable_key = None
        for name in [n for n, e in self._entries.items() if e.entry_point]:
            del self._entries[name]

    # -- lookup -------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """One row per reachable name (plugins read from metadata, none imported).

        A plugin also reachable under its plain name is listed once, by that name;
        a shadowed or ambiguous one is listed as ``dist/name``.
        """
        self._find_plugins()
        rows = []
        for key, entry in self._entries.items():
            if "/" in key and self._entries.get(entry.name) is entry:
                continue
            rows.append(entry if key == entry.name else dataclasses.replace(entry, name=key))
        own = {row.name for row in rows}
        rows += [row for other in self._included() for row in other.entries() if row.name not in own]
        return sorted(rows, key=lambda e: (e.entry_point is not None, e.name))

    def names(self) -> list[str]:
        self._find_plugins()
        return sorted(set(self._entries).union(*(other.names() for other in self._included())))

    def __contains__(self, name: str) -> bool:
        self._find_plugins()
        return name in self._entries or any(name in other for other in self._included())

    def _included(self) -> list[Registry]:
        return [REGISTRIES[kind] for kind in self.includes]

    def _offered_by(self, name: str) -> Registry | None:
        """The included registry offering ``name`` when this one does not hold it."""
        if name in self._entries:
            return None
        return next((other for other in self._included() if name in other), None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def plugin_entries(self) -> list[Entry]:
        """Each plugin part once (under its ``dist/name`` key), found from metadata."""
        self._find_plugins()
        return [e for key, e in sorted(self._entries.items()) if "/" in key and e.entry_point]

    def failed(self) -> list[Entry]:
        """Plugin entries that failed to load so far."""
        return [e for e in self._entries.values() if e.entry_point and e.error]

    def get(self, name: str) -> Any:
        """Return the part called ``name``, importing it (or its plugin) if needed."""
        self._find_plugins()
        entry = self._entries.get(name)
        if entry is None and (other := self._offered_by(name)) is not None:
            return other.get(name)
        if entry is None:
            raise UnknownPartError(self.kind, name, self._close(name), self.failed())
        if entry.source == "ambiguous":
            options = [n for n, e in self._entries.items() if "/" in n and n.endswith("/" + name)]
            raise AmbiguousPartError(
                f"{self.kind} {name!r} is claimed by several plugins ({entry.error[11:]}); "
                f"ask for one of {sorted(options)}"
            )
        if entry.obj is None:
            self._load(entry)
        return entry.obj

    def _load(self, entry: Entry) -> None:
        assert entry.target is not None  # lazy entries always carry a target
        if entry.error is not None:
            raise PartLoadError(_load_message(entry, entry.error))
        try:
            obj = import_target(entry.target)
        except KeyboardInterrupt:
            raise  # the user's Ctrl-C, not the plugin's doing
        except BaseException as exc:  # noqa: BLE001 - any plugin failure, sys.exit() at import too
            entry.error = f"{type(exc).__name__}: {exc}"
            raise PartLoadError(_load_message(entry, entry.error)) from exc
        problem = _wrong_kind(self.kind, obj)
        if problem:
            entry.error = problem
            raise PartLoadError(_load_message(entry, problem))
        entry.obj = obj

    def check_all(self) -> list[Entry]:
        """Import every plugin part; return the entries that failed.

        Works on the real entries (:meth:`plugin_entries`), not the renamed copies
        :meth:`entries` shows, so shadowed and ambiguous plugins are loaded too and
        their failures stick to the entries that ``plugins --check`` reports.
        """
        bad = []
        for entry in self.plugin_entries():
            if entry.obj is None and entry.error is None:
                try:
                    self._load(entry)
                except PartLoadError:
                    pass
            if entry.error:
                bad.append(entry)
        return bad

    def _close(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)


def entry_points_of(group: str) -> list[metadata.EntryPoint]:
    try:
        return list(metadata.entry_points(group=group))
    except Exception:  # noqa: BLE001 - broken metadata must not break listing
        return []


def dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "?"
    name = dist.metadata["Name"] or getattr(dist, "name", "unknown")
    return name, dist.version or "?"


def _load_message(entry: Entry, error: str) -> str:
    return (
        f"{entry.kind} {entry.name!r} from plugin {entry.source} ({entry.entry_point}) failed to load: {error}"
        if entry.entry_point
        else f"{entry.kind} {entry.name!r} ({entry.target}) failed to load: {error}"
    )


def _wrong_kind(kind: str, obj: Any) -> str | None:
    """Why ``obj`` cannot serve as a part of ``kind`` (None when it can)."""
    if not callable(obj):
        return f"object {obj!r} is not callable, so it cannot build a {kind}"
    if kind in MODULE_KINDS and inspect.isclass(obj):
        nn = sys.modules.get("torch.nn")  # a module class was imported with torch: no import here
        if nn is None or not issubclass(obj, nn.Module):
            return f"class {obj.__qualname__} is not a torch.nn.Module, so it cannot be a {kind}"
    return None


REGISTRIES: dict[str, Registry] = {kind: Registry(kind, INCLUDED_KINDS.get(kind, ())) for kind in KINDS}
BACKBONES = REGISTRIES["backbone"]
FUSIONS = REGISTRIES["fusion"]
ADAPTERS = REGISTRIES["adapter"]
BODIES = REGISTRIES["body"]
MODELS = REGISTRIES["model"]
LOSSES = REGISTRIES["loss"]
METRICS = REGISTRIES["metric"]
OPTIMIZERS = REGISTRIES["optimizer"]
SCHEDULES = REGISTRIES["schedule"]
LOGGERS = REGISTRIES["logger"]
CALLBACKS = REGISTRIES["callback"]
DEGRADATIONS = REGISTRIES["degradation"]
DATASETS = REGISTRIES["dataset"]


def registry(kind: str) -> Registry:
    """The registry for ``kind``; a clear error for an unknown kind."""
    try:
        return REGISTRIES[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, KINDS, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownPartError.for_kind(kind, hint) from None


def refresh_plugins() -> None:
    """Re-read plugin metadata on next use (after installing a package at run time)."""
    for reg in REGISTRIES.values():
        reg.refresh()


def register(kind: str, name: str | None = None, obj: Any = None, **kwargs: Any) -> Any:
    """Public shortcut: ``register("fusion", "film", FiLM)`` or as a decorator."""
    return registry(kind).register(name, obj, **kwargs)


def _register_builtins() -> None:
    for kind, parts in BUILTINS.items():
        for name, target in parts.items():
            REGISTRIES[kind].register(name, target=target, source="builtin")


_register_builtins()
