"""Tiny versions of the DINO-IR recipes' models, built through the same code paths.

``tiny_overrides(model_spec)`` shrinks a resolved model spec (a DINO-IR model or a
bare body) without changing what the recipe chose: the body keeps its type, the
backbone its type, size and depth (so the recipe's layer indices stay valid), the
fusion and adapter their types and knobs; only widths shrink.
"""

from __future__ import annotations

from typing import Any, Mapping

from restorekit.recipes import merge

TINY_BODY = {"dim": 8, "num_blocks": [1, 1, 1, 1], "heads": [1, 1, 1, 1], "num_refinement_blocks": 1}
TINY_PROMPTS = {"prompt_dims": [8, 8, 8], "prompt_sizes": [4, 4, 4], "prompt_len": 2}
TINY_DINOV2 = {"model_kwargs": {"embed_dim": 32, "num_heads": 2}}
TINY_CLIP = {"vision_cfg": {"width": 32, "head_width": 16, "image_size": 64, "patch_size": 16}}
TINY_BACKBONE = {"dinov2": TINY_DINOV2, "clip": TINY_CLIP}


def tiny_body(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    body_type = (spec or {}).get("type", "restormer")
    extra = TINY_PROMPTS if body_type == "promptir" else {}
    return merge(dict(spec or {"type": body_type}), {**TINY_BODY, **extra})


def tiny_model_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with every width shrunk (see the module docstring)."""
    if spec.get("type") != "dino_ir":
        return tiny_body(spec)
    backbone = spec.get("backbone") or {"type": "dinov2"}
    out = dict(spec)
    out["body"] = tiny_body(spec.get("body"))
    out["backbone"] = merge(backbone, TINY_BACKBONE[backbone.get("type", "dinov2")])
    out["fusion_channels"] = 16
    out["adapter"] = merge(spec.get("adapter") or {}, {"head_channels": 8})
    return out


def tiny_dino_ir(**overrides: Any) -> Any:
    """The default DINO-IR model, tiny (ViT-B depth 12 at width 32, body dim 8)."""
    from restorekit import build_model

    return build_model(tiny_model_spec(merge({"type": "dino_ir"}, overrides)))
