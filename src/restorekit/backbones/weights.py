"""Where backbone weights come from, and the clear errors when they cannot.

``weights:`` in a backbone spec is one of

* ``None``/``false``: random initialisation (offline default);
* ``true`` or a pretrained tag (``lvd142m``, ``vit_base_patch14_dinov2.lvd142m``,
  ``openai``): downloaded from the Hugging Face hub by timm or open_clip. Offline
  (``HF_HUB_OFFLINE=1`` or no network) this fails at once, unless the file is
  already in the local hub cache, with a message saying how to pass a file;
* a local file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``): read here with
  ``safetensors`` or ``torch.load(weights_only=True)``, then converted by the
  library that owns the architecture (timm converts the original DINOv2 release
  layout; see :func:`create_timm_model`).

A file that does not fit the architecture raises :class:`CheckpointError`
naming the file, the architecture and the first mismatching keys or shapes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch

from restorekit.errors import CheckpointError, first_line
from restorekit.io.state_dict import mismatch, mismatch_text, read_state_file
from restorekit.io.weight_files import cached_hub_file, existing_file, is_file_spec, require_download


# -- reading files -------------------------------------------------------------------
def read_backbone_file(path: str | os.PathLike, arch: str) -> dict[str, torch.Tensor]:
    """Tensors of a backbone weights file, through the one reader."""
    return read_state_file(existing_file(path, arch), what=f"weights file for {arch}").state


# -- timm ------------------------------------------------------------------------------
def _pretrained_cfg(name: str) -> Any:
    """timm's pretrained cfg of ``arch`` or ``arch.tag`` (None when it has none)."""
    try:
        return timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError:
        return None


def resolve_timm_tag(model_name: str, weights: Any) -> str:
    """``arch.tag`` of the hub weights ``weights`` (True, a tag, or ``arch.tag``)."""
    arch = model_name.split(".")[0]
    if weights is True:
        tagged = model_name if "." in model_name else None
        if tagged is None:
            cfg = _pretrained_cfg(arch)
            if cfg is None or not cfg.tag:
                raise CheckpointError(f"timm model {arch!r} has no pretrained weights; pass a local file")
            tagged = f"{arch}.{cfg.tag}"
        return tagged
    text = str(weights)
    tagged = text if "." in text else f"{arch}.{text}"
    if tagged.split(".")[0] != arch:
        raise CheckpointError(f"weights {text!r} are for {tagged.split('.')[0]}, but the backbone is {arch}")
    if tagged not in timm.list_pretrained(f"{arch}.*"):
        known = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise CheckpointError(
            f"unknown pretrained weights {text!r} for {arch} (known: {known}); "
            "or pass a local file path (.safetensors/.pth)"
        )
    return tagged


def _timm_num_classes(model_name: str, model_kwargs: Mapping[str, Any]) -> int:
    cfg = _pretrained_cfg(model_name.split(".")[0])
    return int(model_kwargs.get("num_classes", cfg.num_classes if cfg is not None else 1000))


def create_timm_model(
    model_name: str, weights: Any, model_kwargs: Mapping[str, Any]
) -> tuple[Any, str | None, str | None]:
    """A timm model with its weights: ``(model, weights_description, weights_file)``."""
    if weights is None or weights is False:
        return timm.create_model(model_name, pretrained=False, **model_kwargs), None, None
    if is_file_spec(weights):
        return _timm_from_file(model_name, existing_file(weights, model_name), model_kwargs)
    return _timm_from_hub(model_name, weights, model_kwargs)


def _timm_from_file(model_name: str, path: Path, model_kwargs: Mapping[str, Any]) -> tuple[Any, str, str]:
    """Load a local file through timm's own pretrained path.

    The file's tensors go in as ``pretrained_cfg_overlay["state_dict"]``, so the
    architecture's checkpoint filter converts foreign layouts (the original
    DINOv2 release: ``mask_token``, ``register_tokens``, SwiGLU ``w12``/``w3``;
    open_clip/OpenAI CLIP towers) and resamples position embeddings
    (``checkpoint_path=`` would skip that filter). ``num_classes`` is pinned in
    the overlay so timm loads strictly.
    """
    kwargs = dict(model_kwargs)
    kwargs["num_classes"] = _timm_num_classes(model_name, kwargs)
    overlay = {"state_dict": read_backbone_file(path, model_name), "num_classes": kwargs["num_classes"]}
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (CheckpointError, TypeError):
        raise  # TypeError: a constructor keyword the model does not take, not the file
    except Exception as exc:  # noqa: BLE001 - any load failure is a misfit file
        del overlay  # timm's converter may have changed it: compare the file as written
        report = _timm_misfit(model_name, kwargs, read_backbone_file(path, model_name))
        raise CheckpointError(
            f"weights file {str(path)!r} does not fit timm {model_name}"
            f"{' (' + _kwargs_text(model_kwargs) + ')' if model_kwargs else ''}: "
            f"{report or first_line(exc)}"
        ) from exc
    return model, str(path), str(path)


def _timm_from_hub(model_name: str, weights: Any, model_kwargs: Mapping[str, Any]) -> tuple[Any, str, str | None]:
    """Hub weights by tag: from the local cache, or downloaded when the hub is reachable."""
    tagged = resolve_timm_tag(model_name, weights)
    cfg = _pretrained_cfg(tagged)
    repo = cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else None
    if repo and repo.endswith("/"):
        repo = repo + tagged
    filenames = (
        [cfg.hf_hub_filename] if cfg is not None and cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    )
    cached = require_download(
        f"timm weights {tagged!r}",
        repo_id=repo,
        filenames=filenames,
        url=cfg.url if cfg is not None else None,
        how_to="Pass a local file instead, e.g. weights: /path/to/weights.safetensors "
        "(timm format) or the original release .pth (see docs/backbones.md).",
    )
    try:
        model = timm.create_model(tagged, pretrained=True, **model_kwargs)
    except (CheckpointError, TypeError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"could not load timm weights {tagged!r}: {first_line(exc)}") from exc
    return model, tagged, cached or (cached_hub_file(repo, filenames) if repo else None)


def _kwargs_text(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _timm_misfit(model_name: str, kwargs: Mapping[str, Any], state: dict[str, torch.Tensor]) -> str:
    """Which keys or shapes differ once timm's converter has seen the file."""
    try:
        with torch.device("meta"):
            shell = timm.create_model(model_name, pretrained=False, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return f"cannot build the model to compare: {first_line(exc)}"
    converter = getattr(sys.modules.get(type(shell).__module__), "checkpoint_filter_fn", None)
    if converter is not None:
        try:
            state = converter(dict(state), shell)
        except Exception:  # noqa: BLE001 - fall back to the raw keys
            pass
    return mismatch_text(*mismatch(shell.state_dict(), state))
