"""Pretrained packages on the Hugging Face Hub: download one, push one.

Everything that reaches the network goes through one ``huggingface_hub.HfApi``
object (:func:`hub_api`), so the rest of restorekit (and its tests, which swap
that object for a local stand-in) never talks to the Hub directly.

A Hub id is ``org/name`` (optionally ``hf:org/name``, ``@revision`` at the end).
Offline (``HF_HUB_OFFLINE=1``) a package is taken from the local Hub cache, and
when it is not there the error says how to pass a folder instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from restorekit.errors import CheckpointError, first_line
from restorekit.io.weight_files import hub_offline

HUB_PREFIX = "hf:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?$")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` reads as a Hub id (``org/name``, ``hf:org/name``, ``org/name@rev``)."""
    text = str(text)
    return _HUB_ID.match(text[len(HUB_PREFIX) :] if text.startswith(HUB_PREFIX) else text) is not None


def split_hub_id(text: str) -> tuple[str, str | None]:
    """``(repo_id, revision)`` of a Hub id."""
    text = str(text)
    text = text[len(HUB_PREFIX) :] if text.startswith(HUB_PREFIX) else text
    repo_id, _, revision = text.partition("@")
    return repo_id, revision or None


def hub_api() -> Any:
    """The Hub client every download and upload goes through."""
    return HfApi()


def offline_help(repo_id: str) -> str:
    return (
        f"Download it where there is network (huggingface-cli download {repo_id} --local-dir DIR) "
        f"and pass the folder instead: --weights DIR, or restorekit.from_pretrained('DIR')"
    )


def download_package(hub_id: str) -> Path:
    """The local folder of the package ``hub_id`` (the Hub cache; downloaded when online)."""
    repo_id, revision = split_hub_id(hub_id)
    api = hub_api()
    offline = hub_offline()
    try:
        folder = api.snapshot_download(repo_id=repo_id, revision=revision, local_files_only=offline)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: one clear message
        if offline:
            raise CheckpointError(
                f"pretrained package {repo_id!r} would be downloaded from the Hugging Face Hub, but "
                f"HF_HUB_OFFLINE is set and it is not in the local cache. {offline_help(repo_id)}"
            ) from exc
        raise CheckpointError(
            f"could not download pretrained package {repo_id!r} from the Hub: {first_line(exc)}. "
            f"{offline_help(repo_id)}"
        ) from exc
    return Path(folder)


def push_package(folder: Path, repo_id: str, *, private: bool = False, message: str | None = None) -> str:
    """Upload a package folder to the Hub repository ``repo_id`` (created if needed); its URL."""
    if hub_offline():
        raise CheckpointError(
            f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set (unset it, and log in "
            "with `huggingface-cli login` or HF_TOKEN)"
        )
    api = hub_api()
    try:
        repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=message or f"restorekit package {Path(folder).name}",
        )
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"could not push {folder} to the Hub repository {repo_id!r}: {first_line(exc)}") from exc
    return str(getattr(repo, "url", None) or f"https://huggingface.co/{repo_id}")
