"""How a guidance pass lays a backbone's token grid over an image (shared by DINO-IR and DPC).

* ``stride``: a ``ceil(H/stride) x ceil(W/stride)`` grid, so each token covers the
  pixels of one body feature cell at that stride;
* ``native``: the backbone's own patch grid (the image padded to a multiple of the patch).
"""

from __future__ import annotations

from typing import Any

GRID_RULES = ("stride", "native")
DEFAULT_GUIDE_BACKBONE: dict[str, Any] = {"type": "dinov2", "size": "b"}


def stride_grid(height: int, width: int, stride: int) -> tuple[int, int]:
    """The token grid ``(ceil(H/stride), ceil(W/stride))`` (integer division: exact, and traceable)."""
    return -(-height // stride), -(-width // stride)


def token_grid(rule: str, height: int, width: int, stride: int) -> tuple[int, int] | None:
    """The grid ``rule`` gives an input of ``height x width`` (None: the backbone's native grid)."""
    return stride_grid(height, width, stride) if rule == "stride" else None
