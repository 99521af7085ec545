"""The tiny DINO-IR model the tests build (specs come from :mod:`restorekit.tiny`, the one source)."""

from __future__ import annotations

from typing import Any

from restorekit.recipes import merge
from restorekit.tiny import tiny_model_spec

__all__ = ["tiny_dino_ir", "tiny_model_spec"]


def tiny_dino_ir(**overrides: Any) -> Any:
    """The default DINO-IR model, tiny (ViT-B depth 12 at width 32, body dim 8)."""
    from restorekit import build_model

    return build_model(tiny_model_spec(merge({"type": "dino_ir"}, overrides)))
