"""Does a recipe value fit a part's signature annotation? Only clear mismatches count.

A part's constructor says what it takes (``dim: int``, ``heads: Sequence[int]``,
``weights: str | None``). Building checks each recipe value against that before
calling the constructor, so ``dim: "sixteen"`` is an error naming the key, the
expected and the given type instead of a TypeError deep inside the part.

The check is deliberately conservative: it judges plain YAML types only (int,
float, str, bool, null, lists and mappings of them, ``Literal``, unions) and
accepts whatever it cannot judge (``Any``, classes such as ``nn.Module`` that a
spec mapping may stand for, callables, type variables). An int is a fine float;
``None`` is accepted where the parameter's default is None, however it is annotated.
"""

from __future__ import annotations

import collections.abc as abc
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

_SEQUENCES = (list, tuple, abc.Sequence, abc.MutableSequence)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
_NAMES = {int: "int", float: "float", str: "str", bool: "bool", type(None): "null"}


def parameter_hints(factory: Any) -> dict[str, Any]:
    """Resolved annotations of ``factory``'s parameters (``__init__`` for a class); {} when unreadable."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is simply not checked
        return {}
    hints.pop("return", None)
    return hints


def parameter_defaults(factory: Any) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def fits(value: Any, hint: Any) -> bool | None:
    """True: fits; False: clearly does not; None: cannot tell (accepted)."""
    if hint is Any or hint is object:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        verdicts = [fits(value, a) for a in args]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint in (int, float, str, bool):
        return _fits_scalar(value, hint)
    if origin in _SEQUENCES:
        return _fits_sequence(value, origin, args)
    if origin in _MAPPINGS or hint in _MAPPINGS:
        if not isinstance(value, Mapping):
            return False
        return _all_fit(value.values(), args[1]) if len(args) == 2 else True
    try:
        return True if inspect.isclass(hint) and isinstance(value, hint) else None
    except TypeError:  # a typing construct isinstance cannot judge
        return None


def _fits_scalar(value: Any, hint: type) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _fits_sequence(value: Any, origin: Any, args: tuple[Any, ...]) -> bool | None:
    if not isinstance(value, (list, tuple)):
        return False
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            return False
        verdicts = [fits(v, a) for v, a in zip(value, args)]
        return False if False in verdicts else (None if None in verdicts else True)
    return _all_fit(value, args[0]) if args else True


def _all_fit(values: Any, hint: Any) -> bool | None:
    verdicts = [fits(v, hint) for v in values]
    return False if False in verdicts else (None if None in verdicts else True)


def describe(hint: Any) -> str:
    """A short name of what ``hint`` asks for: ``int``, ``list of int``, ``str or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in _SEQUENCES:
        return f"list of {describe(args[0])}" if args else "list"
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return "mapping"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def type_mismatches(factory: Any, kwargs: Mapping[str, Any], skip: abc.Collection[str] = ()) -> list[str]:
    """``"key: expected X, got Y (value)"`` for each value of ``kwargs`` that clearly misfits."""
    hints, defaults = parameter_hints(factory), parameter_defaults(factory)
    problems = []
    for key, value in kwargs.items():
        if key in skip or key not in hints:
            continue
        if value is None and key in defaults and defaults[key] is None:
            continue
        if fits(value, hints[key]) is False:
            given = _NAMES.get(type(value), type(value).__name__)
            problems.append(f"{key}: expected {describe(hints[key])}, got {given} ({value!r})")
    return problems
