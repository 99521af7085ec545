"""The one path by which weights files become state dicts and state dicts enter modules.

Bodies (released Restormer ``.pth``, PromptIR Lightning ``.ckpt``), backbones
(timm, Meta's and open_clip's files), the engine's checkpoints and ``--weights``
all read through :func:`read_state_file` (the one reader) and enter a module
through :func:`load_state_file` (the one loader, which fits by :func:`check_fit`),
so a file is unwrapped, stripped and checked the same way everywhere, and every
misfit names the file, the architecture and the first keys and shapes at fault.

* Formats: safetensors, or a torch pickle read with ``weights_only=True`` (never
  arbitrary objects).
* Wrappers (:data:`WRAPPER_KEYS`): BasicSR ``{"params": ...}`` / ``params_ema``,
  Lightning and most trainers ``{"state_dict": ...}``, ``{"model": ...}``,
  ``{"module": ...}``; or a plain state dict.
* Prefixes: Lightning's ``net.`` (keys outside it are dropped and reported) and a
  whole-model DDP ``module.``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from restorekit.deprecation import deprecated_names
from restorekit.errors import CheckpointError

__all__ = [
    "WRAPPER_KEYS", "PREFIXES", "Hint", "StateFile", "LoadReport", "read_state_file", "load_state_file",
    "non_finite_keys", "check_finite", "mismatch", "mismatch_text", "check_fit", "copy_into", "first_keys",
]  # fmt: skip

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model", "module")
PREFIXES = ("net.", "module.")
SHOWN = 5  # mismatching keys listed per category in an error

Hint = Callable[[list[str], list[str], list[str]], str]
"""``(missing, unexpected, shape lines) -> a likely knob to change`` ('' for none)."""


@dataclass
class StateFile:
    """A weights file read back: its tensors, the wrapper they came from, the keys dropped.

    ``exact`` holds the file's top-level tensors as stored (no wrapper or prefix
    guessed): a caller that first asks "is this a plain state dict of my model?"
    answers it from the same read.
    """

    state: dict[str, torch.Tensor]
    source_key: str | None = None
    dropped: list[str] = field(default_factory=list)
    path: str = ""
    exact: dict[str, torch.Tensor] = field(default_factory=dict)

    def as_exact(self) -> StateFile:
        """The file taken as written: its top-level tensors, nothing unwrapped or dropped."""
        return StateFile(dict(self.exact), None, [], self.path, self.exact)


@dataclass
class LoadReport:
    """What loading a weights file did (returned for inspection and tests)."""

    path: str
    source_key: str | None  # the wrapper key the weights came from, None for a plain file
    loaded: int  # tensors copied into the module
    ignored: list[str] = field(default_factory=list)  # keys accepted and dropped


def read_state_file(
    path: str | os.PathLike[str], *, key: str | None = None, what: str = "weights file", released: bool = True
) -> StateFile:
    """The tensors of a weights file, unwrapped and stripped (see the module docstring): the one reader.

    ``key`` picks a wrapper explicitly (``params_ema``); ``what`` names the file in errors.
    ``released=False`` reads a file restorekit wrote itself: its keys are the model's
    exactly, so no wrapper or prefix is guessed (a model whose parts are all under
    ``net.`` keeps that prefix).
    """
    where = str(path)
    if not Path(where).is_file():
        raise CheckpointError(f"{what} {where!r} does not exist")
    raw = _load_raw(where, what)
    if not released:
        state, _ = _unwrap(raw, where, None, what, wrappers=())
        return StateFile(state, path=where, exact=state)
    exact = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)} if isinstance(raw, Mapping) else {}
    state, source = _unwrap(raw, where, key, what)
    state, dropped = _strip_prefix(state)
    return StateFile(state, source, dropped, where, exact)


def load_state_file(
    module: nn.Module,
    file: StateFile | str | os.PathLike[str],
    *,
    architecture: str | None = None,
    targets: Mapping[str, torch.Tensor] | None = None,
    ignorable: Iterable[str] = (),
    hint: Hint | None = None,
    key: str | None = None,
    released: bool = True,
    what: str = "weights file",
) -> LoadReport:
    """Copy a weights file (a path, read here, or a :class:`StateFile` already read) into ``module``: the one loader.

    Strict: ``targets`` (default: the module's whole state dict; the engine passes
    the trainable part) must match the file's keys and shapes exactly, except keys
    under one of the ``ignorable`` module prefixes (modules an official release saves
    but its forward never uses), which are dropped and logged. Weights holding NaN or
    infinity are refused. Every error names the file and ``architecture``.
    """
    read = file if isinstance(file, StateFile) else read_state_file(file, key=key, what=what, released=released)
    check_finite(read.state, read.path)
    prefixes = tuple(p.rstrip(".") + "." for p in ignorable)
    ignored = sorted(k for k in read.state if prefixes and k.startswith(prefixes))
    state = {k: v for k, v in read.state.items() if not (prefixes and k.startswith(prefixes))}
    arch = architecture or type(module).__name__
    copy_into(module.state_dict() if targets is None else targets, state, f"{what} {read.path!r}", arch, hint)
    if ignored or read.dropped:
        log.warning(
            "%s: loaded into %s; ignored %d key(s) of modules the official model defines but never uses%s%s",
            read.path,
            arch,
            len(ignored),
            f": {', '.join(ignored)}" if ignored else "",
            f"; dropped {len(read.dropped)} key(s) outside the 'net.' prefix: {', '.join(read.dropped)}"
            if read.dropped
            else "",
        )
    return LoadReport(read.path, read.source_key, len(state), ignored + read.dropped)


def non_finite_keys(tree: Any, prefix: str = "") -> list[str]:
    """Dotted keys of floating tensors in ``tree`` holding NaN or infinity."""
    bad: list[str] = []
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            bad.append(prefix or "<tensor>")
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            bad += non_finite_keys(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            bad += non_finite_keys(value, f"{prefix}[{i}]")
    return bad


def check_finite(state: Mapping[str, torch.Tensor], file: str | Path) -> None:
    """Refuse weights holding NaN or infinity, naming the file and the tensors."""
    bad = non_finite_keys(state)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(
            f"weights file {file} holds NaN or infinite values in {len(bad)} tensor(s): "
            f"{', '.join(bad[:5])}{more}; its outputs would be meaningless, so it is not used"
        )


def _load_raw(where: str, what: str) -> Any:
    if where.endswith(".safetensors"):
        try:
            return load_file(where, device="cpu")
        except Exception as exc:  # noqa: BLE001 - any read failure is the file's fault
            raise CheckpointError(f"cannot read {what} {where!r} (not a readable safetensors file): {exc}") from exc
    try:
        return torch.load(where, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"cannot read {what} {where!r} safely (torch.load weights_only=True): {type(exc).__name__}: {first} "
            "(expected safetensors or a torch state dict; TorchScript archives and pickled objects are refused)"
        ) from exc


def _unwrap(
    raw: Any, where: str, key: str | None, what: str, wrappers: tuple[str, ...] = WRAPPER_KEYS
) -> tuple[dict[str, torch.Tensor], str | None]:
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{what} {where!r} holds a {type(raw).__name__}, not a state dict")
    if key is not None:
        if key not in raw:
            raise CheckpointError(f"{what} {where!r} has no key {key!r} (top-level keys: {first_keys(raw)})")
        source: str | None = key
        state = raw[key]
    else:
        source = next((k for k in wrappers if isinstance(raw.get(k), Mapping)), None)
        state = raw[source] if source else raw
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, Mapping) else {}
    if not tensors:
        inside = f"[{source!r}]" if source else ""
        keys = first_keys(state) if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(
            f"{what} {where!r}{inside} is not a state dict of tensors (keys: {keys}; "
            f"known wrappers: {', '.join(WRAPPER_KEYS)})"
        )
    return tensors, source


def _strip_prefix(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Drop a ``net.``/``module.`` prefix; keys outside a ``net.`` prefix are dropped."""
    for prefix in PREFIXES:
        inside = [k for k in state if k.startswith(prefix)]
        if not inside:
            continue
        if prefix == "module." and len(inside) != len(state):
            continue  # only a whole-model DDP wrapper is stripped
        dropped = [k for k in state if not k.startswith(prefix)]
        return {k[len(prefix) :]: state[k] for k in inside}, dropped
    return state, []


def mismatch(expected: Mapping[str, Any], given: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, shape lines) between two key -> tensor-or-shape maps."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = []
    for key, value in expected.items():
        if key in given:
            want, got = _shape(value), _shape(given[key])
            if want != got:
                shapes.append(f"{key}: file {got} vs model {want}")
    return missing, unexpected, shapes


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def mismatch_text(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    """The first keys of each category, counted ('' when nothing differs)."""
    parts = []
    for count_label, items in (("missing key(s)", missing), ("unexpected key(s)", unexpected),
                               ("shape mismatch(es)", shapes)):  # fmt: skip
        if items:
            sep = "; " if items is shapes else ", "
            parts.append(f"{len(items)} {count_label} (first: {sep.join(items[:SHOWN])})")
    return "; ".join(parts)


def check_fit(
    expected: Mapping[str, Any], given: Mapping[str, Any], where: str, arch: str, hint: Hint | None = None
) -> None:
    """Raise a CheckpointError naming ``where``, ``arch`` and the misfit unless keys and shapes match exactly."""
    missing, unexpected, shapes = mismatch(expected, given)
    if not (missing or unexpected or shapes):
        return
    message = f"{where} does not fit {arch}: {mismatch_text(missing, unexpected, shapes)}"
    advice = hint(missing, unexpected, shapes) if hint else ""
    raise CheckpointError(message + (f". Hint: {advice}" if advice else ""))


def copy_into(
    targets: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    where: str,
    arch: str,
    hint: Hint | None = None,
) -> None:
    """Copy ``state`` into the tensors of ``targets`` (a module's state dict, or part of it), strictly."""
    check_fit(targets, state, where, arch, hint)
    with torch.no_grad():
        for key, value in targets.items():
            value.copy_(state[key])


def first_keys(mapping: Mapping[Any, Any]) -> str:
    keys = list(mapping)
    return ", ".join(map(str, keys[:SHOWN])) + (", ..." if len(keys) > SHOWN else "")


# The one reader's name since 0.2 (it returns a StateFile, not a dict); removed in 0.3.
__getattr__ = deprecated_names(__name__, {"read_state_dict": ("read_state_file", read_state_file)})
