"""The one path by which weights files become state dicts and state dicts enter modules.

Bodies (released Restormer ``.pth``, PromptIR Lightning ``.ckpt``), backbones
(timm, Meta's and open_clip's files), the engine's checkpoints and ``--weights``
all read through :func:`read_state_dict` and fit through :func:`check_fit`, so a
file is unwrapped, stripped and checked the same way everywhere, and every
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

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from restorekit.errors import CheckpointError

WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model", "module")
PREFIXES = ("net.", "module.")
SHOWN = 5  # mismatching keys listed per category in an error

Hint = Callable[[list[str], list[str], list[str]], str]
"""``(missing, unexpected, shape lines) -> a likely knob to change`` ('' for none)."""


@dataclass
class StateFile:
    """A weights file read back: its tensors, the wrapper they came from, the keys dropped."""

    state: dict[str, torch.Tensor]
    source_key: str | None = None
    dropped: list[str] = field(default_factory=list)


def read_state_dict(
    path: str | os.PathLike[str], *, key: str | None = None, what: str = "weights file", released: bool = True
) -> StateFile:
    """The tensors of a weights file, unwrapped and stripped (see the module docstring).

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
        return StateFile(state)
    state, source = _unwrap(raw, where, key, what)
    state, dropped = _strip_prefix(state)
    return StateFile(state, source, dropped)


def _load_raw(where: str, what: str) -> Any:
    if where.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file

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
