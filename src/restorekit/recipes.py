"""Recipes: YAML files with ``base:`` inheritance, merge rules and ``-o`` overrides.

Merge rules (one function, :func:`merge`, used for inheritance, overrides and
``build_model(**overrides)`` alike):

* dicts merge key by key;
* lists and scalars replace;
* a dict whose ``type`` differs from the base node's ``type`` replaces the whole
  node, so no keyword of the old part leaks into the new one;
* a dict with ``_replace_: true`` replaces the node explicitly.

Inheritance follows fvcore's ``load_yaml_with_base`` in spirit: a few dozen lines.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from restorekit.errors import Problems, RecipeError
from restorekit.published import check_published
from restorekit.recipe_plugins import recipe_plugins

REPLACE_KEY = "_replace_"
BASE_KEY = "base"
RECIPE_PATH_ENV = "RESTOREKIT_RECIPE_PATH"
RECIPE_SUFFIXES = (".yaml", ".yml")
TOP_LEVEL_KEYS = ("name", "description", "model", "loss", "data", "train", "eval", "published")
# Hostile-input limits (a recipe needs a few hundred values, a dozen levels): beyond them a
# YAML alias bomb or a deep nest would hang or overflow the stack instead of failing clearly.
MAX_ALIASES = 1000
MAX_VALUES = 100_000  # values of the recipe with every alias expanded where it is used
MAX_DEPTH = 100  # nested mappings and lists


# -- YAML --------------------------------------------------------------------------
class _RecipeLoader(yaml.SafeLoader):
    """Safe loader that rejects duplicate keys, reads ``2e-4`` as a float and keeps to the limits."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Count aliases and nesting as the document is composed (before anything is built)."""
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise RecipeError(f"{_where(mark)}: more than {MAX_ALIASES} YAML aliases; a recipe needs far fewer")
            return super().compose_node(parent, index)
        nests = self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent)
        self.depth += nests
        try:
            if self.depth > MAX_DEPTH:
                raise RecipeError(f"{_where(mark)}: nesting deeper than {MAX_DEPTH} levels; a recipe needs far fewer")
            return super().compose_node(parent, index)
        finally:
            self.depth -= nests

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node


def _where(mark: yaml.Mark) -> str:
    return f"{mark.name}:{mark.line + 1}"


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values ``node`` holds with every alias expanded; each shared node is sized once."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise RecipeError(f"{_where(node.start_mark)}: a YAML alias refers to a node that contains it")
    size = 1
    if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
        open_nodes.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        size += sum(_expanded_size(child, sizes, open_nodes) for child in children)
        open_nodes.discard(key)
        if size > MAX_VALUES:
            raise RecipeError(
                f"{_where(node.start_mark)}: YAML aliases expand to more than {MAX_VALUES} values; "
                "a recipe needs far fewer"
            )
    sizes[key] = size
    return size


def _construct_mapping(loader: _RecipeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """Build a dict; a key written twice in this mapping is an error.

    Keys pulled in by a merge key (``<<: *anchor``) are not the mapping's own: the
    YAML spec lets an explicit key override them, so duplicates are looked for among
    the explicit keys only. ``flatten_mapping`` puts merged pairs first, then the
    explicit ones, so the last ``n_explicit`` pairs are the explicit keys.
    """
    n_explicit = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    first_explicit = len(node.value) - n_explicit
    result: dict = {}
    explicit: set = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=deep)
        mark = key_node.start_mark
        try:
            hash(key)
        except TypeError:
            raise RecipeError(
                f"{mark.name}:{mark.line + 1}: a mapping key must be a scalar "
                f"(a name or a number), got a {type(key).__name__}"
            ) from None
        if index >= first_explicit:
            if key in explicit:
                raise RecipeError(f"{mark.name}:{mark.line + 1}: duplicate key {key!r} in the same mapping")
            explicit.add(key)
        result[key] = loader.construct_object(value_node, deep=deep)
    return result


_RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 wants a dot in floats ("2.0e-4"); recipes write "2e-4" and mean a float.
_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT_FIRST = list("-+0123456789.")
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_RecipeLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, _FLOAT_FIRST)


class _RecipeDumper(yaml.SafeDumper):
    """Safe dumper that knows the loader's float resolver, so it quotes ``"2e-4"``.

    Without it a string such as ``"1e5"`` is written plain and read back as a float.
    """


_RecipeDumper.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, _FLOAT_FIRST)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with the recipe loader; errors name ``source``."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except RecipeError as exc:
        raise RecipeError(str(exc).replace("<unicode string>", source)) from None
    except yaml.YAMLError as exc:
        message = str(exc).replace("<unicode string>", source)
        raise RecipeError(f"{source}: invalid YAML: {message}") from None


def load_yaml(path: str | os.PathLike) -> dict:
    """Read one YAML file (no inheritance); it must hold a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: a recipe must be UTF-8 text; byte {exc.start} is not ({exc.reason})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping, got {type(data).__name__}")
    return data


# -- merge rules -----------------------------------------------------------------
def merge(base: Any, override: Any) -> Any:
    """Merge ``override`` onto ``base`` by the recipe rules; inputs are not modified."""
    if isinstance(override, Mapping):
        if override.get(REPLACE_KEY):
            return strip_replace_markers(override)
        if isinstance(base, Mapping):
            base_type, new_type = base.get("type"), override.get("type")
            if "type" in override and "type" in base and new_type != base_type:
                return strip_replace_markers(override)
            merged = {k: copy.deepcopy(v) for k, v in base.items()}
            for key, value in override.items():
                if key == REPLACE_KEY:
                    continue
                merged[key] = merge(base[key], value) if key in base else strip_replace_markers(value)
            return merged
        return strip_replace_markers(override)
    return copy.deepcopy(override)


def strip_replace_markers(node: Any, _copies: dict[int, Any] | None = None) -> Any:
    """A deep copy of ``node`` without ``_replace_`` keys.

    A node shared through YAML aliases is copied once and the copy shared alike, so
    an alias graph is never walked as the (exponentially larger) tree it stands for.
    """
    copies = {} if _copies is None else _copies
    if id(node) in copies:
        return copies[id(node)]
    if isinstance(node, Mapping):
        mapping: dict = {}
        copies[id(node)] = mapping
        mapping.update((k, strip_replace_markers(v, copies)) for k, v in node.items() if k != REPLACE_KEY)
        return mapping
    if isinstance(node, list):
        items: list = []
        copies[id(node)] = items
        items.extend(strip_replace_markers(v, copies) for v in node)
        return items
    return copy.deepcopy(node)


# -- finding recipes ---------------------------------------------------------------
def builtin_recipe_dir() -> Path | None:
    """The recipes shipped with restorekit (in the wheel, or the repo's ``recipes/``)."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "_recipes", package_dir.parents[1] / "recipes"):
        if candidate.is_dir():
            return candidate
    return None


def recipe_dirs() -> list[Path]:
    """Folders searched for recipe names, in order of precedence (plugins come last)."""
    dirs = [Path(p) for p in os.environ.get(RECIPE_PATH_ENV, "").split(os.pathsep) if p]
    builtin = builtin_recipe_dir()
    return dirs + ([builtin] if builtin else [])


def plugin_recipe_dirs() -> list[tuple[str, Path]]:
    """(source, folder) for each working ``restorekit.recipes`` entry point (none is imported)."""
    return [(p.source, p.folder) for p in recipe_plugins() if p.folder is not None]


def find_recipe(name: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """Resolve a recipe path or name (``dino_ir``, ``ablations/concat_fusion``).

    With ``relative_to`` (the folder of the recipe naming a ``base:``) a relative
    path is taken from that folder, never from the current directory: a file that
    happens to sit in the working directory must not shadow a recipe name.
    """
    raw = Path(name)
    candidates: list[Path] = [relative_to / raw if relative_to is not None else raw]
    if raw.suffix in RECIPE_SUFFIXES:
        names = [raw]
    else:
        names = [Path(f"{raw}{suffix}") for suffix in RECIPE_SUFFIXES] + [raw]
    for folder in recipe_dirs() + [d for _, d in plugin_recipe_dirs()]:
        candidates.extend(folder / n for n in names)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    known = sorted(list_recipes())

    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    where = f" (referenced from {relative_to})" if relative_to else ""
    raise RecipeError(f"recipe {str(name)!r} not found{where}{hint}{_broken_recipe_plugins()}")


def _broken_recipe_plugins() -> str:
    """The recipe plugins that failed, for a not-found message (empty when none did)."""
    broken = [f"{p.source} ({p.entry_point}): {p.error}" for p in recipe_plugins() if p.error]
    return "; recipe plugins that failed: " + "; ".join(broken) if broken else ""


def list_recipes() -> dict[str, str]:
    """Recipe name -> source ("builtin", a folder from the environment, or ``dist==version``)."""
    builtin = builtin_recipe_dir()
    sources = [("builtin" if d == builtin else str(d), d) for d in recipe_dirs()]
    out: dict[str, str] = {}
    for source, folder in sources + plugin_recipe_dirs():
        paths = [p for suffix in RECIPE_SUFFIXES for p in folder.rglob(f"*{suffix}")]
        for path in sorted(paths, key=lambda p: (p.with_suffix(""), RECIPE_SUFFIXES.index(p.suffix))):
            out.setdefault(path.relative_to(folder).with_suffix("").as_posix(), source)
    return out


# -- loading -----------------------------------------------------------------------
def load_recipe(
    name_or_path: str | os.PathLike,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> dict:
    """Load a recipe with its ``base`` chain, then apply ``-o`` style overrides; top-level keys checked."""
    recipe = resolve_recipe(name_or_path, overrides)
    validate_recipe(recipe, str(name_or_path))
    return recipe


def resolve_recipe(
    name_or_path: str | os.PathLike,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> dict:
    """The recipe with its ``base`` chain and overrides applied, nothing checked yet
    (``restorekit.engine.validate.validate`` then reports every problem at once)."""
    return apply_overrides(_load_with_base(find_recipe(name_or_path), stack=()), overrides)


def _load_with_base(path: Path, stack: tuple[Path, ...]) -> dict:
    if path in stack:
        chain = " -> ".join(str(p) for p in stack + (path,))
        raise RecipeError(f"recipe inheritance cycle: {chain}")
    data = load_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        # merge() strips the markers of a recipe with a base; one without must not keep them.
        return strip_replace_markers(data)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"{path}: key 'base' must be a recipe name or a list of them")
    merged: dict = {}
    for base in bases:
        base_path = find_recipe(base, relative_to=path.parent)
        merged = merge(merged, _load_with_base(base_path, stack + (path,)))
    return merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and YAML-parsed value."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {text!r} must look like key.path=value")
    return key.split("."), parse_yaml(value, f"override {key}") if value.strip() else None


def apply_overrides(recipe: dict, overrides: Sequence[str] | Mapping[str, Any]) -> dict:
    """Apply ``["a.b=1", ...]`` or ``{"a.b": 1}`` with the same merge rules."""
    items: Iterable[tuple[list[str], Any]]
    if isinstance(overrides, Mapping):
        items = [(k.split("."), v) for k, v in overrides.items()]
    else:
        items = [parse_override(o) for o in overrides]
    for path, value in items:
        recipe = _merge_at(recipe, path, value, [])
    return recipe


def _merge_at(node: Any, path: list[str], value: Any, done: list[str]) -> Any:
    if not path:
        return merge(node, value)
    head, rest = path[0], path[1:]
    where = ".".join(done + [head])
    if isinstance(node, list):
        if not head.lstrip("-").isdigit() or not -len(node) <= int(head) < len(node):
            raise RecipeError(f"override key {where!r}: index out of range for a list of {len(node)}")
        out = list(node)
        out[int(head)] = _merge_at(node[int(head)], rest, value, done + [head])
        return out
    if node is None:
        node = {}
    if not isinstance(node, Mapping):
        raise RecipeError(f"override key {where!r}: {'.'.join(done)!r} is not a mapping")
    if path == ["type"]:  # switching a part's type replaces its node, as nesting would
        return merge(node, {"type": value})
    out = dict(node)
    out[head] = _merge_at(node.get(head), rest, value, done + [head]) if rest else merge(node.get(head), value)
    return out


def validate_recipe(recipe: Mapping[str, Any], source: str, problems: Problems | None = None) -> None:
    """Top-level keys must be known; sections must be mappings; ``published:`` must have its shape."""
    problems = Problems() if problems is None else problems
    for key, value in recipe.items():
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.report(
                f"{source}: unknown top-level key {key!r}{hint} (known: {', '.join(TOP_LEVEL_KEYS)})", str(key)
            )
        elif key in {"model", "loss", "data", "train", "eval"} and not isinstance(value, (dict, type(None))):
            problems.report(f"{source}: key {key!r} must be a mapping, got {type(value).__name__}", key)

    check_published(recipe.get("published"), source, problems)


def recipe_locations(
    name_or_path: str | os.PathLike, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> dict[str, str]:
    """Dotted key (``train.lr``, ``eval.metrics[0]``) -> ``file:line`` where its value was last written.

    Keys set by an override map to ``-o key``. Read again from the files the loader
    read (the merged recipe keeps no positions), for messages only.
    """
    out: dict[str, str] = {}
    _locate_file(find_recipe(name_or_path), out, stack=())
    keys = list(overrides) if isinstance(overrides, Mapping) else [o.partition("=")[0].strip() for o in overrides]
    for key in keys:
        out[key] = f"-o {key}"
        parts = key.split(".")
        for end in range(1, len(parts)):  # a new section or part named only by an override
            out.setdefault(".".join(parts[:end]), f"-o {key}")
    return out


def _locate_file(path: Path, out: dict[str, str], stack: tuple[Path, ...]) -> None:
    if path in stack:
        return
    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader
    if not isinstance(root, yaml.MappingNode):
        return
    for key_node, value_node in root.value:
        if key_node.value == BASE_KEY:
            values = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for base in values:
                if isinstance(base, yaml.ScalarNode):
                    _locate_file(find_recipe(base.value, relative_to=path.parent), out, stack + (path,))
    _locate_node(root, "", _shown(path), out)


def _shown(path: Path) -> str:
    """``path`` as a message shows it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _locate_node(node: yaml.Node, prefix: str, file: str, out: dict[str, str]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != BASE_KEY:
                key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                out[key] = f"{file}:{key_node.start_mark.line + 1}"
                _locate_node(value_node, key, file, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{prefix}[{index}]"
            out[key] = f"{file}:{item.start_mark.line + 1}"
            _locate_node(item, key, file, out)


# -- showing and comparing ---------------------------------------------------------
def dump_recipe(recipe: Mapping[str, Any]) -> str:
    """YAML text of a resolved recipe (round-trips through :func:`parse_yaml`)."""
    return yaml.dump(dict(recipe), Dumper=_RecipeDumper, sort_keys=False, default_flow_style=None)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


_MISSING = object()


def recipe_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The dotted keys whose values differ, as (key, value in a, value in b)."""
    flat_a, flat_b = flatten(a), flatten(b)
    rows = []
    for key in sorted(set(flat_a) | set(flat_b)):
        va, vb = flat_a.get(key, _MISSING), flat_b.get(key, _MISSING)
        if not _same(va, vb):
            rows.append((key, va, vb))
    return rows


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type, recursively: ``True``/``1`` and ``64``/``64.0`` differ.

    Python's ``==`` calls those equal, but in a recipe they mean different things.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b) or (a != a and b != b)  # NaN equals NaN here


def is_missing(value: Any) -> bool:
    """True for the placeholder :func:`recipe_diff` uses for an absent key."""
    return value is _MISSING
