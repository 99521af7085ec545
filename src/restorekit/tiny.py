"""Tiny versions of every builtin part and recipe model: the one source tests and benchmarks use.

A tiny spec keeps what a recipe chose (the body's type, the backbone's type and code
path, the fusion's and adapter's knobs) and shrinks only widths and depths, so a
part runs in milliseconds on a CPU through exactly the code a full-size one does.

* :data:`TINY` holds, per kind and builtin name, the keywords that make the part
  tiny (merged onto a spec with the recipe rules).
* :data:`BUILD_CONTEXT` holds what an owner passes when it builds a part of that
  kind (a fusion's channels, an adapter's point): what the registry-wide contract
  tests pass too.
* :func:`tiny_model_spec` and :func:`tiny_loss_spec` shrink a whole recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from restorekit.recipes import merge

TINY_WIDTH, TINY_HEADS = 32, 2  # backbones
TINY_FUSION_CHANNELS = 16
DINO_IR_LAYERS = (2, 5, 8, 11)  # DinoIR's default layers, used when a spec names none
DPC_LAYERS = (1, 3)  # DPCLoss's default layers

_TINY_UNET = {"dim": 8, "num_blocks": [1, 1, 1, 1], "heads": [1, 1, 1, 1], "num_refinement_blocks": 1}
_TINY_VIT = {"model_kwargs": {"embed_dim": TINY_WIDTH, "num_heads": TINY_HEADS, "depth": 4}}

TINY: dict[str, dict[str, dict[str, Any]]] = {
    "body": {
        "restormer": _TINY_UNET,
        "promptir": {**_TINY_UNET, "prompt_dims": [8, 8, 8], "prompt_sizes": [4, 4, 4], "prompt_len": 2},
        "adair": _TINY_UNET,
        "moce_ir": {**_TINY_UNET, "num_dec_blocks": [1, 1, 1]},
        "moce_ir_s": {**_TINY_UNET, "num_dec_blocks": [1, 1, 1]},
    },
    "backbone": {
        "dinov2": _TINY_VIT,
        "timm": {"model_name": "vit_small_patch14_dinov2", **_TINY_VIT},
        "clip": {"vision_cfg": {"width": TINY_WIDTH, "layers": 4, "head_width": TINY_WIDTH // TINY_HEADS,
                                "image_size": 64, "patch_size": 16}},  # fmt: skip
    },
    "fusion": {"msf": {"num_experts": 2, "gate_hidden": 8, "load_balance_weight": 0.01}, "concat": {}},
    "adapter": {"dino_restore": {"head_channels": 8}},
    "model": {},  # filled below: every body is a model, and dino_ir has its own
    "loss": {
        "l1": {},
        "mse": {},
        "charbonnier": {},
        "weighted_sum": {"terms": [{"type": "l1", "weight": 1.0}, {"type": "mse", "weight": 0.5}]},
        "dpc": {"layers": [0, 1], "backbone": {"type": "dinov2", "size": "s", **_TINY_VIT}},
        "fft": {},
    },
    "metric": {"psnr": {}, "ssim": {}, "psnr_y": {}, "ssim_y": {}},
    "optimizer": {"adamw": {}, "adam": {}, "sgd": {}},
    "schedule": {"warmup_cosine": {"warmup_iters": 2}, "constant": {"warmup_iters": 2},
                 "multistep": {"milestones": [3, 6]}},  # fmt: skip
    "logger": {"jsonl": {}, "tensorboard": {"flush_secs": 1}},
    "callback": {"early_stopping": {"monitor": "psnr", "patience": 2}},
    "degradation": {name: {} for name in
                    ("identity", "noise", "rain", "haze", "motion_blur", "defocus_blur", "low_light", "jpeg")},
}  # fmt: skip
TINY["model"].update(TINY["body"])
TINY["model"]["dino_ir"] = {"layers": [0, 1]}  # a shallow guide; tiny_model_spec shrinks the rest

# What an owner passes when it builds a part of each kind (the model, the engine).
BUILD_CONTEXT: dict[str, dict[str, Any]] = {
    "fusion": {"in_channels": TINY_WIDTH, "num_layers": 2, "out_channels": TINY_FUSION_CHANNELS},
    "adapter": {"guide_channels": TINY_FUSION_CHANNELS, "channels": 16},
    "schedule": {"lr": 1e-3, "iterations": 10},
}


def tiny_spec(kind: str, spec: str | Mapping[str, Any] | None, default_type: str | None = None) -> Any:
    """``spec`` with the tiny keywords of its type merged on (unknown types pass unchanged)."""
    if spec is None:
        spec = {"type": default_type}
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        return spec  # an already built part
    return merge(dict(spec), TINY.get(kind, {}).get(str(spec.get("type")), {}))


def needed_depth(*layer_lists: Sequence[int] | None) -> int:
    """Blocks a backbone needs so every requested layer exists (at least 4)."""
    deepest = max((int(layer) for layers in layer_lists if layers for layer in layers), default=3)
    return max(4, deepest + 1)


def tiny_backbone_spec(spec: Any, depth: int) -> Any:
    """A backbone spec at tiny width with ``depth`` blocks (a depth the spec sets itself wins)."""
    out = tiny_spec("backbone", spec, "dinov2")
    if not isinstance(out, Mapping):
        return out
    given = spec if isinstance(spec, Mapping) else {}
    if "model_kwargs" in out:
        depth = (given.get("model_kwargs") or {}).get("depth", depth)
        return merge(out, {"model_kwargs": {"depth": depth}})
    if "vision_cfg" in out:
        depth = (given.get("vision_cfg") or {}).get("layers", depth)
        return merge(out, {"vision_cfg": {"layers": depth}})
    return out


def loss_layers(loss_spec: Any) -> list[int]:
    """Backbone layers any term of a loss spec reads (the DPC layers)."""
    found: list[int] = []
    if isinstance(loss_spec, Mapping):
        if loss_spec.get("type") == "dpc":
            found += [int(x) for x in loss_spec.get("layers", DPC_LAYERS)]
        for value in loss_spec.values():
            found += loss_layers(value)
    elif isinstance(loss_spec, (list, tuple)):
        for value in loss_spec:
            found += loss_layers(value)
    return found


def tiny_model_spec(model_spec: Mapping[str, Any], loss_spec: Any = None) -> dict[str, Any]:
    """A recipe's model at test size (see the module docstring); bodies and DINO-IR alike."""
    spec = copy.deepcopy(dict(model_spec))
    if spec.get("type") != "dino_ir":
        return tiny_spec("model", spec)
    depth = needed_depth(spec.get("layers", DINO_IR_LAYERS), loss_layers(loss_spec))
    spec["body"] = tiny_spec("body", spec.get("body"), "restormer")
    spec["backbone"] = tiny_backbone_spec(spec.get("backbone"), depth)
    spec["fusion_channels"] = TINY_FUSION_CHANNELS
    adapter = spec.get("adapter") or {}
    if isinstance(adapter, Mapping) and adapter.get("type", "dino_restore") in TINY["adapter"]:
        spec["adapter"] = merge(adapter, TINY["adapter"][adapter.get("type", "dino_restore")])
    return spec


def tiny_loss_spec(loss_spec: Any) -> Any:
    """A loss spec whose own backbones (if any) are tiny too."""
    if isinstance(loss_spec, Mapping):
        out = {k: tiny_loss_spec(v) for k, v in loss_spec.items()}
        if out.get("type") == "dpc" and out.get("backbone") is not None:
            out["backbone"] = tiny_backbone_spec(out["backbone"], needed_depth(loss_layers(loss_spec)))
        return out
    if isinstance(loss_spec, list):
        return [tiny_loss_spec(v) for v in loss_spec]
    return loss_spec
