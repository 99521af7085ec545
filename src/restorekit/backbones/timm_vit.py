"""Any timm ViT as a frozen feature backbone; DINOv2 (and DINOv3) are its defaults.

timm does the architecture work: ``forward_intermediates(indices=...,
stop_early=True)`` runs the patch embedding and only the blocks up to the
deepest one asked for, and drops the prefix (class and register) tokens. Models
are created with ``dynamic_img_size=True`` (position embeddings interpolated to
any grid) where the model accepts it; the others run at their fixed input size
and their maps are resized to the requested grid.

``pos_embed_resize`` picks how position embeddings reach a grid other than the
trained one: ``timm`` (timm's antialiased resize to the exact size) or ``meta``
(Meta's DINOv2 rule, :mod:`restorekit.backbones.pos_embed`; the default of the
``dinov2`` backbone, so its features equal Meta's forward at every input size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from restorekit.backbones.base import IMAGENET_MEAN, IMAGENET_STD, FeatureBackbone
from restorekit.backbones.pos_embed import RESIZE_RULES, check_vit, meta_rule, vit_intermediates
from restorekit.backbones.weights import create_timm_model
from restorekit.errors import BuildError

DINOV2_SIZES = {"s": "small", "b": "base", "l": "large", "g": "giant"}
_DYNAMIC = {"dynamic_img_size": True, "dynamic_img_pad": True}


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


class TimmBackbone(FeatureBackbone):
    """A timm model with ``blocks`` and ``forward_intermediates`` (ViT, DeiT, EVA,
    DINOv2/v3, SigLIP, ...) behind the backbone interface.

    Args:
        model_name: timm architecture (optionally ``arch.tag``).
        weights: None (random init), True or a pretrained tag (hub download), or a
            local file (timm format, or a foreign layout timm converts such as the
            original DINOv2 release ``dinov2_vitb14_pretrain.pth``).
        frozen: keep the weights fixed (eval mode, no grad, not checkpointed).
        img_size: size the position embeddings are built for (timm's default if None).
        mean, std: input normalisation (the pretrained config's if None).
        dtype: autocast dtype on CUDA (``bf16``), None for full precision.
        antialias: antialias when resizing the input to the requested grid.
        model_kwargs: passed to ``timm.create_model`` (e.g. ``depth``, ``embed_dim``).
        pos_embed_resize: ``timm`` (timm's own resize) or ``meta`` (Meta's DINOv2 rule:
            bicubic with scale ``(n + 0.1) / M`` for the original models, antialiased to
            the exact size for the register models).
    """

    def __init__(
        self,
        model_name: str = "vit_base_patch14_dinov2",
        weights: Any = None,
        frozen: bool = True,
        img_size: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dtype: str | torch.dtype | None = None,
        antialias: bool = False,
        model_kwargs: Mapping[str, Any] | None = None,
        pos_embed_resize: str = "timm",
    ) -> None:
        if pos_embed_resize not in RESIZE_RULES:
            raise BuildError(f"{model_name}: pos_embed_resize must be one of {RESIZE_RULES}, got {pos_embed_resize!r}")
        kwargs = dict(model_kwargs or {})
        if img_size is not None:
            kwargs["img_size"] = img_size
        model, described, weights_file = self._create(model_name, weights, kwargs)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        super().__init__(
            name=model_name,
            frozen=frozen,
            mean=tuple(mean) if mean is not None else tuple(cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(std) if std is not None else tuple(cfg.get("std", IMAGENET_STD)),
            dtype=dtype,
            antialias=antialias,
        )
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(0)  # the head is never used: do not keep its weights
        self.model = model
        self.weights, self.weights_file = described, weights_file
        self.embed_dim = int(getattr(model, "embed_dim", getattr(model, "num_features", 0)))
        self.num_layers = len(model.blocks)
        patch = _pair(model.patch_embed.patch_size)
        if patch[0] != patch[1]:
            raise BuildError(f"{model_name}: non-square patches {patch} are not supported")
        self.patch_size = patch[0]
        dynamic = bool(getattr(model, "dynamic_img_size", False))
        self.fixed_input_size = None if dynamic else _pair(model.patch_embed.img_size)
        self.pos_embed_resize = pos_embed_resize
        if pos_embed_resize == "meta":
            check_vit(model, model_name)
            self._meta_rule = meta_rule(registers=getattr(model, "reg_token", None) is not None)
        self._finish_init()

    @staticmethod
    def _create(model_name: str, weights: Any, kwargs: dict[str, Any]) -> tuple[Any, str | None, str | None]:
        """Create with dynamic input size where the model accepts it."""
        wanted = {**_DYNAMIC, **kwargs}
        try:
            model, described, weights_file = create_timm_model(model_name, weights, wanted)
        except TypeError as exc:
            if "dynamic_img" not in str(exc) or set(_DYNAMIC) & set(kwargs):
                raise BuildError(f"timm model {model_name!r}: {exc}") from exc
            model, described, weights_file = create_timm_model(model_name, weights, kwargs)
        except RuntimeError as exc:  # unknown model name, bad kwargs inside timm
            raise BuildError(f"timm model {model_name!r} could not be created: {exc}") from exc
        if not hasattr(model, "blocks") or not hasattr(model, "forward_intermediates"):
            raise BuildError(
                f"timm model {model_name!r} ({type(model).__name__}) has no transformer blocks "
                "with forward_intermediates; the timm backbone serves ViT-style models"
            )
        return model, described, weights_file

    def _extract(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        if self.pos_embed_resize == "meta":
            return vit_intermediates(self.model, x, indices, self._meta_rule)
        return self.model.forward_intermediates(
            x, indices=indices, stop_early=True, intermediates_only=True, output_fmt="NCHW"
        )


def dinov2_model_name(size: str = "b", registers: bool = False) -> str:
    """timm's name for a DINOv2 size (``s``/``b``/``l``/``g``), with 4 registers or not."""
    key = str(size).lower()
    key = {v: k for k, v in DINOV2_SIZES.items()}.get(key, key)
    if key not in DINOV2_SIZES:
        raise BuildError(f"dinov2 size {size!r} is not one of {sorted(DINOV2_SIZES)} (ViT-S/B/L/g)")
    reg = "_reg4" if registers else ""
    return f"vit_{DINOV2_SIZES[key]}_patch14{reg}_dinov2"


class DINOv2Backbone(TimmBackbone):
    """DINOv2 (patch 14, ImageNet mean/std) in sizes ``s``/``b``/``l``/``g``;
    ``registers=True`` picks the 4-register models. ``weights`` as for
    :class:`TimmBackbone`; the original release files load directly. Position
    embeddings follow Meta's rule (``pos_embed_resize='meta'``) unless told
    ``timm``, so features equal Meta's forward at every input size."""

    def __init__(
        self,
        size: str = "b",
        registers: bool = False,
        weights: Any = None,
        frozen: bool = True,
        img_size: int | Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        dtype: str | torch.dtype | None = None,
        antialias: bool = False,
        model_kwargs: Mapping[str, Any] | None = None,
        pos_embed_resize: str = "meta",
    ) -> None:
        super().__init__(
            dinov2_model_name(size, registers),
            weights=weights,
            frozen=frozen,
            img_size=img_size,
            mean=mean,
            std=std,
            dtype=dtype,
            antialias=antialias,
            model_kwargs=model_kwargs,
            pos_embed_resize=pos_embed_resize,
        )
