"""The vision tower of an open_clip ViT as a frozen feature backbone.

Only the image tower is built, through open_clip's own builder from the named
model config, so any open_clip ViT config works (``ViT-B-16`` by default). CLIP
towers have learned position embeddings for one input size: the input is
resized to that size (OpenAI mean/std) and the token maps are resized to the
requested grid, which is how the paper compares CLIP with DINOv2 layer by layer.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Mapping, Sequence
from typing import Any

import open_clip
import torch
from open_clip import model as open_clip_model
from open_clip import pretrained as oc_pretrained
from open_clip.model import resize_pos_embed

from restorekit.backbones.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, FeatureBackbone
from restorekit.backbones.weights import read_backbone_file
from restorekit.errors import BuildError, CheckpointError, first_line
from restorekit.io.state_dict import StateFile, load_state_file
from restorekit.io.weight_files import existing_file, is_file_spec, require_download


def _vision_config(model_name: str, vision_cfg: Mapping[str, Any] | None) -> tuple[int, dict[str, Any], bool]:
    """(projection dim, vision config, quick_gelu) of an open_clip model config."""
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise BuildError(f"unknown open_clip model {model_name!r}{hint} (see open_clip.list_models())")
    vision = {**cfg["vision_cfg"], **dict(vision_cfg or {})}
    if vision.get("timm_model_name"):
        raise BuildError(
            f"open_clip {model_name!r} uses a timm image tower; use the timm backbone "
            f"(type: timm, model_name: {vision['timm_model_name']!r}) instead"
        )
    if isinstance(vision.get("layers"), (list, tuple)):
        raise BuildError(f"open_clip {model_name!r} has a ResNet image tower; the clip backbone serves ViTs")
    return int(cfg["embed_dim"]), vision, bool(cfg.get("quick_gelu", False))


def visual_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image tower's tensors from a full open_clip checkpoint (or a tower-only one)."""
    if any(k.startswith("visual.") for k in state):
        return {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    return dict(state)


class CLIPBackbone(FeatureBackbone):
    """open_clip image tower (ViT) with the backbone interface.

    Args:
        model_name: open_clip model config (``ViT-B-16``, ``ViT-L-14``, ...).
        weights: None (random init), True or an open_clip pretrained tag
            (``openai``, ``laion2b_s34b_b88k``, ...), or a local open_clip checkpoint
            (a full CLIP state dict with ``visual.*`` keys, or the tower alone).
        frozen: keep the weights fixed.
        quick_gelu: QuickGELU activations (OpenAI-trained weights need them);
            None takes the model config's or the pretrained tag's setting.
        vision_cfg: overrides of the config's ``vision_cfg`` (e.g. a tiny test tower).
        mean, std: input normalisation (OpenAI's by default).
        dtype: autocast dtype on CUDA (``bf16``), None for full precision.
        antialias: antialias when resizing the input to the tower's size.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        weights: Any = None,
        frozen: bool = True,
        quick_gelu: bool | None = None,
        vision_cfg: Mapping[str, Any] | None = None,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        dtype: str | torch.dtype | None = None,
        antialias: bool = False,
    ) -> None:
        super().__init__(name=model_name, frozen=frozen, mean=mean, std=std, dtype=dtype, antialias=antialias)
        embed_dim, vision, config_quick_gelu = _vision_config(model_name, vision_cfg)
        path: str | None = None
        described: str | None = None
        if weights is None or weights is False:
            pass
        elif is_file_spec(weights):
            path = str(existing_file(weights, f"open_clip {model_name}"))
            described = path
        else:
            tag, path, tag_cfg = open_clip_hub_file(model_name, weights)
            described = f"{model_name}:{tag}"
            config_quick_gelu = config_quick_gelu or bool(tag_cfg.get("quick_gelu", False))
        use_quick_gelu = config_quick_gelu if quick_gelu is None else bool(quick_gelu)
        try:
            tower = vision_tower_builder()(embed_dim, vision, quick_gelu=use_quick_gelu)
        except TypeError as exc:
            raise BuildError(f"open_clip {model_name!r}: bad vision_cfg {dict(vision_cfg or {})!r}: {exc}") from exc
        self.tower = tower
        self.quick_gelu = use_quick_gelu
        if path is not None:
            self._load(path, model_name)
        self.weights, self.weights_file = described, path
        self.embed_dim = int(tower.transformer.width)
        self.num_layers = len(tower.transformer.resblocks)
        patch = tuple(tower.patch_size)
        if patch[0] != patch[1]:
            raise BuildError(f"open_clip {model_name!r}: non-square patches {patch} are not supported")
        self.patch_size = int(patch[0])
        self.fixed_input_size = (int(tower.image_size[0]), int(tower.image_size[1]))
        self._finish_init()

    def _load(self, path: str, model_name: str) -> None:
        arch = f"the open_clip {model_name} image tower"
        state = visual_state(read_backbone_file(path, arch))
        try:
            if "positional_embedding" in state:
                # Same tower at another input size: resample the grid as open_clip does.
                wrapped = {"visual.positional_embedding": state["positional_embedding"]}
                resize_pos_embed(wrapped, types.SimpleNamespace(visual=self.tower))
                state["positional_embedding"] = wrapped["visual.positional_embedding"]
            load_state_file(self.tower, StateFile(state, path=str(path)), architecture=arch)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a resample on a wrong-width tensor
            raise CheckpointError(f"weights file {path!r} does not fit {arch}: {exc}") from exc

    def _extract(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        out = self.tower.forward_intermediates(
            x, indices=indices, stop_early=True, intermediates_only=True, output_fmt="NCHW"
        )
        return out["image_intermediates"]


def vision_tower_builder() -> Any:
    """open_clip's builder of the image tower alone (building the text tower too would waste memory).

    open_clip exposes no public way to build only the tower, so this is the one place that
    reaches into its internals (``open_clip.model._build_vision_tower``, present in 2.x and
    3.x; pyproject bounds open_clip below 4). A release without it is a clear error.
    """
    builder = getattr(open_clip_model, "_build_vision_tower", None)
    if builder is None:
        raise BuildError(
            f"clip backbone: this open_clip ({getattr(open_clip, '__version__', '?')}) has no "
            "open_clip.model._build_vision_tower; install open_clip_torch>=2.23,<4"
        )
    return builder


# -- open_clip -------------------------------------------------------------------------
def open_clip_hub_file(model_name: str, weights: Any) -> tuple[str, str, dict[str, Any]]:
    """``(tag, local file, pretrained cfg)`` of open_clip hub weights (True or a tag)."""
    tags = oc_pretrained.list_pretrained_tags_by_model(model_name)
    if weights is True:
        if not tags:
            raise CheckpointError(f"open_clip model {model_name!r} has no pretrained weights; pass a local file")
        tag = "openai" if "openai" in tags else tags[0]
    else:
        tag = str(weights)
    cfg = oc_pretrained.get_pretrained_cfg(model_name, tag)
    if not cfg:
        raise CheckpointError(
            f"unknown pretrained weights {tag!r} for open_clip {model_name} "
            f"(known: {', '.join(tags) or 'none'}); or pass a local open_clip checkpoint file"
        )
    # open_clip writes "org/repo/" for the default file and "org/repo/file.bin" otherwise.
    repo, filename = os.path.split(cfg.get("hf_hub") or "")
    filename = filename or "open_clip_pytorch_model.bin"
    safe = (
        "open_clip_model.safetensors"
        if filename == "open_clip_pytorch_model.bin"
        else (filename[:-4] + ".safetensors" if filename.endswith((".bin", ".pth")) else None)
    )
    filenames = [f for f in (safe, filename) if f]
    cached = require_download(
        f"open_clip weights {model_name}:{tag}",
        repo_id=repo or None,
        filenames=filenames,
        url=cfg.get("url") or None,
        how_to="Pass a local open_clip checkpoint instead, e.g. weights: /path/to/open_clip_model.safetensors.",
    )
    if cached:
        return tag, cached, cfg
    try:
        path = oc_pretrained.download_pretrained(cfg)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"could not download open_clip weights {model_name}:{tag}: {first_line(exc)}") from exc
    if not path:
        raise CheckpointError(f"open_clip weights {model_name}:{tag} have no download location")
    return tag, path, cfg
