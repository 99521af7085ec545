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

import hashlib
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from restorekit import state_dict
from restorekit.errors import CheckpointError, first_line

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_TRUTHY = {"1", "true", "yes", "on"}
_NETWORK_TIMEOUT_S = 3.0


# -- what a weights value means ------------------------------------------------------
def is_file_spec(weights: Any) -> bool:
    """True when ``weights`` names a local file (existing, or path-like)."""
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return (
        os.path.exists(weights)
        or weights.lower().endswith(WEIGHT_SUFFIXES)
        or os.sep in weights
        or weights.startswith(("~", "."))
    )


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a weights file (identifies frozen weights in run records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def existing_file(weights: str | os.PathLike, arch: str) -> Path:
    """The weights path, expanded; a clear error when it does not exist."""
    path = Path(os.path.expanduser(str(weights)))
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} for {arch} does not exist")
    return path


# -- reading files -------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike, arch: str = "the backbone") -> dict[str, torch.Tensor]:
    """Tensors of a backbone weights file, through the one state-dict reader."""
    return state_dict.read_state_dict(existing_file(path, arch), what=f"weights file for {arch}").state


def load_exactly(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Any, arch: str) -> None:
    """Load ``state`` into ``module`` strictly, or raise a CheckpointError saying why not."""
    state_dict.copy_into(module.state_dict(), state, f"weights file {str(path)!r}", arch)


# -- the hub ---------------------------------------------------------------------------
def hub_offline() -> bool:
    """Whether Hugging Face hub downloads are switched off (HF_HUB_OFFLINE)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY:
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def cached_hub_file(repo_id: str, filenames: Iterable[str]) -> str | None:
    """A file of ``repo_id`` already in the local hub cache, if any."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in filenames:
        try:
            found = try_to_load_from_cache(repo_id, filename)
        except Exception:  # noqa: BLE001 - a malformed id simply is not cached
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _hub_host() -> str:
    try:
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except Exception:  # noqa: BLE001
        return "huggingface.co"


def _reachable(host: str, port: int = 443) -> bool:
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; let the download try
    try:
        with socket.create_connection((host, port), timeout=_NETWORK_TIMEOUT_S):
            return True
    except OSError:
        return False


def require_download(
    what: str, *, repo_id: str | None, filenames: Iterable[str], url: str | None, how_to: str
) -> str | None:
    """Fail fast when a hub download cannot happen; return a cached file if one exists.

    ``what`` describes the weights asked for; ``how_to`` says how to pass a file.
    """
    if repo_id:
        cached = cached_hub_file(repo_id, filenames)
        if cached:
            return cached
    source = f"the Hugging Face hub ({repo_id})" if repo_id else (url or "the network")
    host = _hub_host() if repo_id or not url else (urlparse(url).hostname or "")
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set and they are not in the local cache"
    elif not _reachable(host):
        reason = f"the network ({host}) cannot be reached"
    else:
        return None
    where = f" Download them where there is network: {url}." if url else ""
    raise CheckpointError(f"{what} would be downloaded from {source}, but {reason}. {how_to}{where}")


# -- timm ------------------------------------------------------------------------------
def _pretrained_cfg(name: str) -> Any:
    """timm's pretrained cfg of ``arch`` or ``arch.tag`` (None when it has none)."""
    import timm

    try:
        return timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError:
        return None


def resolve_timm_tag(model_name: str, weights: Any) -> str:
    """``arch.tag`` of the hub weights ``weights`` (True, a tag, or ``arch.tag``)."""
    import timm

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
    import timm

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
    import timm

    kwargs = dict(model_kwargs)
    kwargs["num_classes"] = _timm_num_classes(model_name, kwargs)
    overlay = {"state_dict": read_state_dict(path, model_name), "num_classes": kwargs["num_classes"]}
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (CheckpointError, TypeError):
        raise  # TypeError: a constructor keyword the model does not take, not the file
    except Exception as exc:  # noqa: BLE001 - any load failure is a misfit file
        del overlay  # timm's converter may have changed it: compare the file as written
        report = _timm_misfit(model_name, kwargs, read_state_dict(path, model_name))
        raise CheckpointError(
            f"weights file {str(path)!r} does not fit timm {model_name}"
            f"{' (' + _kwargs_text(model_kwargs) + ')' if model_kwargs else ''}: "
            f"{report or first_line(exc)}"
        ) from exc
    return model, str(path), str(path)


def _timm_from_hub(model_name: str, weights: Any, model_kwargs: Mapping[str, Any]) -> tuple[Any, str, str | None]:
    """Hub weights by tag: from the local cache, or downloaded when the hub is reachable."""
    import timm

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
    import timm

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
    return state_dict.mismatch_text(*state_dict.mismatch(shell.state_dict(), state))


# -- open_clip -------------------------------------------------------------------------
def open_clip_hub_file(model_name: str, weights: Any) -> tuple[str, str, dict[str, Any]]:
    """``(tag, local file, pretrained cfg)`` of open_clip hub weights (True or a tag)."""
    from open_clip import pretrained as oc_pretrained

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
