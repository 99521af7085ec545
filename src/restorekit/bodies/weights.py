"""Load released body weights: Restormer ``.pth``, PromptIR Lightning ``.ckpt``, plain files.

Files are read by :func:`restorekit.state_dict.read_state_dict` (safetensors or
``torch.load(weights_only=True)``, never arbitrary objects). The layouts understood:

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
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch.nn as nn

from restorekit.state_dict import copy_into, read_state_dict

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What loading a weights file did (returned for inspection and tests)."""

    path: str
    source_key: str | None  # the wrapper key the weights came from, None for a plain file
    loaded: int  # tensors copied into the module
    ignored: list[str] = field(default_factory=list)  # keys accepted and dropped


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
    read = read_state_dict(where, key=key)
    prefixes = tuple(p.rstrip(".") + "." for p in ignorable)
    ignored = sorted(k for k in read.state if k.startswith(prefixes))
    state = {k: v for k, v in read.state.items() if not k.startswith(prefixes)}
    copy_into(module.state_dict(), state, f"weights file {where!r}", architecture, hint=_hint)
    if ignored or read.dropped:
        log.warning(
            "%s: loaded into %s; ignored %d key(s) of modules the official model defines but never uses%s%s",
            where,
            architecture,
            len(ignored),
            f": {', '.join(ignored)}" if ignored else "",
            f"; dropped {len(read.dropped)} key(s) outside the 'net.' prefix: {', '.join(read.dropped)}"
            if read.dropped
            else "",
        )
    return LoadReport(where, read.source_key, len(state), ignored + read.dropped)


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
