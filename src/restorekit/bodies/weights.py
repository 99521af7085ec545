"""Load released body weights: Restormer ``.pth``, PromptIR Lightning ``.ckpt``, plain files.

Files are read with ``torch.load(weights_only=True)`` (or safetensors), never by
unpickling arbitrary objects. The layouts understood:

* BasicSR / Restormer: ``{"params": state_dict}`` (or ``"params_ema"``);
* PyTorch Lightning / PromptIR: ``{"state_dict": {"net.<name>": tensor, ...}, ...}``;
* a plain state dict (``.pth``, ``.pt``, ``.safetensors``), with or without a
  ``module.`` (DDP) or ``net.`` prefix.

A file that does not fit raises :class:`~restorekit.errors.CheckpointError`
naming the file, the architecture and the first mismatching keys and shapes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from restorekit.errors import CheckpointError

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("params", "params_ema", "state_dict")
_PREFIXES = ("net.", "module.")
_SHOWN = 5  # mismatching keys listed in an error


@dataclass
class LoadReport:
    """What loading a weights file did (returned for inspection and tests)."""

    path: str
    source_key: str | None  # the wrapper key the weights came from, None for a plain file
    loaded: int  # tensors copied into the module
    ignored: list[str] = field(default_factory=list)  # keys accepted and dropped


def read_state_dict(
    path: str | os.PathLike[str], key: str | None = None
) -> tuple[dict[str, torch.Tensor], str | None, list[str]]:
    """(state dict, wrapper key used, keys dropped with a foreign prefix) of a weights file."""
    where = str(path)
    if not Path(where).is_file():
        raise CheckpointError(f"weights file {where!r} does not exist")
    if where.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file

            raw: Any = load_file(where, device="cpu")
        except Exception as exc:  # noqa: BLE001 - any read failure is the file's fault
            raise CheckpointError(f"cannot read weights file {where!r}: {exc}") from exc
    else:
        try:
            raw = torch.load(where, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(
                f"cannot read weights file {where!r} safely (torch.load weights_only=True): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    state, source = _unwrap(raw, where, key)
    state, dropped = _strip_prefix(state)
    return state, source, dropped


def _unwrap(raw: Any, where: str, key: str | None) -> tuple[dict[str, torch.Tensor], str | None]:
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"weights file {where!r} holds a {type(raw).__name__}, not a state dict"
        )
    if key is not None:
        if key not in raw:
            raise CheckpointError(
                f"weights file {where!r} has no key {key!r} (top-level keys: {_first(raw)})"
            )
        source: str | None = key
        state = raw[key]
    else:
        source = next((k for k in WRAPPER_KEYS if isinstance(raw.get(k), Mapping)), None)
        state = raw[source] if source else raw
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        where_in = f"[{source!r}]" if source else ""
        raise CheckpointError(
            f"weights file {where!r}{where_in} is not a state dict of tensors "
            f"(keys: {_first(state) if isinstance(state, Mapping) else type(state).__name__}; "
            f"known wrappers: {', '.join(WRAPPER_KEYS)})"
        )
    return dict(state), source


def _strip_prefix(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Drop a ``net.``/``module.`` prefix; keys outside a ``net.`` prefix are dropped."""
    for prefix in _PREFIXES:
        inside = [k for k in state if k.startswith(prefix)]
        if not inside:
            continue
        if prefix == "module." and len(inside) != len(state):
            continue  # only a whole-model DDP wrapper is stripped
        dropped = [k for k in state if not k.startswith(prefix)]
        return {k[len(prefix):]: state[k] for k in inside}, dropped
    return state, []


def load_weights(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    architecture: str,
    ignorable: Iterable[str] = (),
    key: str | None = None,
) -> LoadReport:
    """Copy the weights in ``path`` into ``module``, strictly.

    Keys under one of the ``ignorable`` module prefixes (modules an official
    release saves but its forward never uses) are accepted, dropped and logged.
    Any other missing or unexpected key, or any shape mismatch, raises
    :class:`CheckpointError`.
    """
    where = str(path)
    state, source, dropped = read_state_dict(where, key)
    prefixes = tuple(p.rstrip(".") + "." for p in ignorable)
    ignored = sorted(k for k in state if k.startswith(prefixes))
    state = {k: v for k, v in state.items() if not k.startswith(prefixes)}

    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(_mismatch_message(where, architecture, missing, unexpected, shapes))
    module.load_state_dict(state, strict=True)
    if ignored or dropped:
        log.warning(
            "%s: loaded into %s; ignored %d key(s) of modules the official model defines but "
            "never uses%s%s",
            where,
            architecture,
            len(ignored),
            f": {', '.join(ignored)}" if ignored else "",
            f"; dropped {len(dropped)} key(s) outside the 'net.' prefix: {', '.join(dropped)}"
            if dropped
            else "",
        )
    return LoadReport(where, source, len(state), ignored + dropped)


def _mismatch_message(
    where: str, architecture: str, missing: list[str], unexpected: list[str], shapes: list[str]
) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (first: {', '.join(missing[:_SHOWN])})")
    if unexpected:
        parts.append(
            f"{len(unexpected)} unexpected key(s) (first: {', '.join(unexpected[:_SHOWN])})"
        )
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (first: {'; '.join(shapes[:_SHOWN])})")
    message = f"weights file {where!r} does not fit {architecture}: " + "; ".join(parts)
    hint = _hint(missing, unexpected, shapes)
    return message + (f". Hint: {hint}" if hint else "")


def _hint(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    """A likely knob to change, from the official names of what does not fit."""
    norm_bias = ".body.bias"
    if missing and all(k.endswith(norm_bias) for k in missing) and not unexpected:
        return "the file has no LayerNorm biases; build with layernorm_type='BiasFree'"
    if unexpected and all(k.endswith(norm_bias) for k in unexpected) and not missing:
        return "the file has LayerNorm biases; build with layernorm_type='WithBias'"
    if any(k.startswith("skip_conv.") for k in unexpected):
        return "the file is a dual-pixel model; build with dual_pixel_task=True, in_channels=6"
    if any(k.startswith("prompt") for k in unexpected):
        return "the file looks like PromptIR weights; use the 'promptir' body"
    if any(k.startswith("prompt") for k in missing) and not unexpected:
        return "the file looks like Restormer weights; use the 'restormer' body"
    if shapes:
        return "check dim, num_blocks, heads, ffn_expansion_factor and the channel counts"
    return ""


def _first(mapping: Mapping[str, Any]) -> str:
    keys = list(mapping)
    return ", ".join(map(str, keys[:_SHOWN])) + (", ..." if len(keys) > _SHOWN else "")
