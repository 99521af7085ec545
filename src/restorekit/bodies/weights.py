"""Load released body weights: Restormer ``.pth``, PromptIR Lightning ``.ckpt``, plain files.

Files are read and loaded by :func:`restorekit.io.state_dict.read_state_file` and
:func:`~restorekit.io.state_dict.load_state_file` (safetensors or
``torch.load(weights_only=True)``, never arbitrary objects); this module adds the
hints that name a body's knob when a file does not fit. The layouts understood:

* BasicSR / Restormer: ``{"params": state_dict}`` (or ``"params_ema"``);
* PyTorch Lightning / PromptIR: ``{"state_dict": {"net.<name>": tensor, ...}, ...}``;
* a plain state dict (``.pth``, ``.pt``, ``.safetensors``), with or without a
  ``module.`` (DDP) or ``net.`` prefix.

A file that does not fit raises :class:`~restorekit.errors.CheckpointError`
naming the file, the architecture and the first mismatching keys and shapes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch.nn as nn

from restorekit.deprecation import warn_renamed
from restorekit.io.state_dict import LoadReport, load_state_file

__all__ = ["LoadReport", "body_hint", "load_weights"]


def load_weights(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    architecture: str,
    ignorable: Iterable[str] = (),
    key: str | None = None,
) -> LoadReport:
    """Deprecated: ``body.load_weights(path)`` or :func:`restorekit.io.state_dict.load_state_file`."""
    warn_renamed(
        "restorekit.bodies.weights.load_weights", "body.load_weights(path) or restorekit.io.state_dict.load_state_file"
    )
    return load_state_file(module, path, architecture=architecture, ignorable=ignorable, key=key, hint=body_hint)


def body_hint(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
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
