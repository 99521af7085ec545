"""Padding an image batch to a multiple of the U-Net's stride: shared by the bodies and the guide pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAD_MULTIPLE = 8  # three 2x down-samplings


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Pad the bottom and right of an NCHW tensor so both sides are multiples of ``multiple``.

    Reflect padding, as the official test scripts do; a side too short to
    reflect (padding >= its length) is padded by replication instead.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_w:
        x = F.pad(x, (0, pad_w, 0, 0), mode="reflect" if pad_w < w else "replicate")
    if pad_h:
        x = F.pad(x, (0, 0, 0, pad_h), mode="reflect" if pad_h < h else "replicate")
    return x
