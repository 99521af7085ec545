"""Weights files on disk and in the Hugging Face cache: what a ``weights:`` value points at.

A local path is recognised (:func:`is_file_spec`), checked (:func:`existing_file`) and
hashed (:func:`file_sha256`, which identifies frozen weights in run records); a
download is allowed only when it can happen (:func:`require_download`: offline, or
the hub unreachable, fails at once with a message saying how to pass a file).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache

from restorekit.errors import CheckpointError

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


# -- the hub ---------------------------------------------------------------------------
def hub_offline() -> bool:
    """Whether Hugging Face hub downloads are switched off (HF_HUB_OFFLINE)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY:
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def cached_hub_file(repo_id: str, filenames: Iterable[str]) -> str | None:
    """A file of ``repo_id`` already in the local hub cache, if any."""
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
        return urlparse(hf_constants.ENDPOINT).hostname or "huggingface.co"
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
