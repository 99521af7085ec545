"""Training checkpoints: written atomically, validated on load, pruned to last N + best.

A checkpoint is a folder ``checkpoints/ckpt-00000100/`` holding

* ``model.safetensors``: the trainable state (frozen backbones are recorded, not written);
* ``ema.safetensors``: the EMA of that state (when EMA is on);
* ``state.pt``: optimizer, schedule, step, data position, RNG states, EMA update count,
  NaN-guard streak and best score; plain tensors and containers, read with
  ``torch.load(weights_only=True)``;
* ``meta.json``: step, metrics and frozen-part records, for people.

It is written into ``ckpt-00000100.tmp/``, every file fsynced, then renamed, so a
folder with the final name is always complete.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from restorekit.deprecation import warn_renamed
from restorekit.errors import CheckpointError
from restorekit.frozen import trainable_state_dict
from restorekit.io.atomic import created_file, fsync_dir, publish_dir, write_text
from restorekit.io.state_dict import load_state_file, non_finite_keys, read_state_file

CKPT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
BEST_FILE = "best.json"
FILE_FORMAT = "restorekit"  # safetensors metadata "format" of every weights file restorekit writes
_NAME = re.compile(r"^ckpt-(\d+)$")


class NonFiniteCheckpointError(CheckpointError):
    """Refusing to write a checkpoint that holds NaN or infinity."""


class CheckpointWriteError(CheckpointError):
    """The disk refused a checkpoint (full, read-only, over quota); nothing partial is left."""


def ckpt_name(step: int) -> str:
    return f"ckpt-{step:08d}"


def is_checkpoint_name(name: str) -> bool:
    """Whether ``name`` is a complete checkpoint folder's name (``ckpt-00000100``, not ``.tmp``)."""
    return _NAME.match(name) is not None


@dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    state: dict[str, Any]
    meta: dict[str, Any]


# -- writing --------------------------------------------------------------------------
def cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights).
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_state: Mapping[str, torch.Tensor],
    ema_state: Mapping[str, torch.Tensor] | None,
    state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write a complete checkpoint for ``step`` and return its folder.

    A write error (disk full, read-only folder) is one :class:`CheckpointWriteError`
    naming the folder and the reason; the temporary folder is removed and earlier
    checkpoints are untouched, so the run can continue from them.
    """
    bad = non_finite_keys({"model": dict(model_state), "ema": dict(ema_state or {}), "state": state})
    if bad:
        raise NonFiniteCheckpointError(
            f"not writing the checkpoint of step {step}: non-finite values in {', '.join(bad[:5])}"
        )
    root = run_dir / CKPT_DIR
    final = root / ckpt_name(step)
    tmp = root / f"{final.name}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, payload in _payloads(step, model_state, ema_state, meta).items():
            with created_file(tmp / name) as handle:
                handle.write(payload())
        with created_file(tmp / STATE_FILE) as handle:
            torch.save(state, handle)
        publish_dir(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(
            f"cannot write the checkpoint of step {step} into {root}: {exc.strerror or exc}; the partial "
            f"checkpoint was removed and earlier ones are intact (free space or fix permissions, then "
            f"continue with --resume auto)"
        ) from exc
    return final


def _payloads(
    step: int,
    model_state: Mapping[str, torch.Tensor],
    ema_state: Mapping[str, torch.Tensor] | None,
    meta: dict[str, Any],
) -> dict[str, Callable[[], bytes]]:
    """File name -> the bytes to write (computed when written)."""
    info = {"format": FILE_FORMAT, "step": str(step)}
    files = {MODEL_FILE: lambda: save(cpu_copy(model_state), metadata=info)}
    if ema_state is not None:
        files[EMA_FILE] = lambda: save(cpu_copy(ema_state), metadata={**info, "ema": "1"})
    files[META_FILE] = lambda: json.dumps({"step": step, **meta}, indent=2, default=str).encode("utf-8")
    return files


def write_best(run_dir: Path, step: int, score: float, metric: str) -> None:
    """Record which checkpoint scored best (it survives pruning)."""
    try:
        write_text(run_dir / CKPT_DIR / BEST_FILE, json.dumps({"step": step, "metric": metric, "score": score}))
    except OSError as exc:
        raise CheckpointWriteError(
            f"cannot record the best checkpoint in {run_dir / CKPT_DIR}: {exc.strerror or exc}"
        ) from exc


def read_best(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CKPT_DIR / BEST_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# -- listing, loading ---------------------------------------------------------------
def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete-looking checkpoint folders, oldest first (``.tmp`` ones never count)."""
    root = run_dir / CKPT_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def load_checkpoint(path: Path, *, need_ema: bool | None = None) -> Checkpoint:
    """Read and check a checkpoint folder; any defect is a :class:`CheckpointError`."""
    path = Path(path)
    match = _NAME.match(path.name)
    if not path.is_dir() or not match:
        raise CheckpointError(f"{path} is not a checkpoint folder (ckpt-NNNNNNNN)")
    step = int(match.group(1))
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        model = read_state_file(path / MODEL_FILE, released=False).state
        ema = read_state_file(path / EMA_FILE, released=False).state if (path / EMA_FILE).exists() else None
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt file of any kind
        raise CheckpointError(f"checkpoint {path} is unreadable: {type(exc).__name__}: {exc}") from exc
    if meta.get("step") != step or state.get("step") != step:
        raise CheckpointError(f"checkpoint {path}: its files disagree about the step")
    if need_ema and ema is None:
        raise CheckpointError(f"checkpoint {path} has no {EMA_FILE} but the run uses EMA")
    bad = non_finite_keys({"model": model, "ema": ema or {}})
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite values in {', '.join(bad[:5])}")
    return Checkpoint(path, step, model, ema, state, meta)


def latest_valid(run_dir: Path) -> Checkpoint | None:
    """The newest checkpoint that loads; defective newer ones are set aside with a warning."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:
            aside = path.with_name(path.name + ".corrupt")
            number = 1
            while aside.exists():  # keep an earlier quarantine of the same step for inspection
                number += 1
                aside = path.with_name(f"{path.name}.corrupt{number}")
            path.rename(aside)
            warnings.warn(f"skipping checkpoint of step {step}: {exc} (moved to {aside.name})", stacklevel=2)
    return None


def written_while_diverging(path: Path) -> bool:
    """Whether the checkpoint at ``path`` was written while steps were being skipped as non-finite.

    Its weights are finite (the skipped steps changed nothing) but may already be
    wild (the divergence began before the first NaN); an unreadable ``meta.json``
    counts as marked, since nothing vouches for it.
    """
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return int(meta.get("nonfinite_streak", 0)) > 0


def last_good(run_dir: Path) -> Path | None:
    """The newest checkpoint not written during a divergence streak (without loading it)."""
    for _, path in reversed(list_checkpoints(run_dir)):
        if not written_while_diverging(path):
            return path
    return None


def describe_last_good(run_dir: Path) -> str:
    """Which checkpoint to go back to after a divergence, and which newer ones not to trust."""
    good = last_good(run_dir)
    newer = [p.name for _, p in list_checkpoints(run_dir) if good is None or p.name > good.name]
    text = f"the last good checkpoint is {good}" if good else "no good checkpoint was written"
    if newer:
        text += f" ({', '.join(newer)} {'was' if len(newer) == 1 else 'were'} written during the non-finite steps)"
    return text


def clean_incomplete(run_dir: Path) -> None:
    """Remove ``.tmp`` and ``.old-*`` leftovers of a run killed while writing."""
    root = run_dir / CKPT_DIR
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.is_dir() and (child.name.endswith(".tmp") or ".old-" in child.name):
            shutil.rmtree(child, ignore_errors=True)
    fsync_dir(root)


def forget_best_after(run_dir: Path, step: int) -> None:
    """After resuming from ``step``, drop a best record a killed run wrote later."""
    best = read_best(run_dir)
    if best is not None and best.get("step", 0) > step:
        (run_dir / CKPT_DIR / BEST_FILE).unlink()


def prune(run_dir: Path, keep_last: int, keep_best: bool) -> None:
    """Keep the newest ``keep_last`` checkpoints, the best one and the last good one.

    The last good one (:func:`last_good`) outlives a divergence streak that writes
    ``keep_last`` marked checkpoints after it, so an aborted run still has it.
    """
    found = list_checkpoints(run_dir)
    best = read_best(run_dir) if keep_best else None
    kept = {best.get("step") if best else None, *(step for step, _ in found[-keep_last:])}
    good = last_good(run_dir)
    for step, path in found:
        if step not in kept and path != good:
            shutil.rmtree(path, ignore_errors=True)


# -- weights for evaluation and inference -------------------------------------------
def resolve_weights(path: str | Path, *, use_ema: bool = True, what: str = "--weights") -> Path:
    """A safetensors file from a run folder, a checkpoint folder or a file.

    A run folder gives its best checkpoint (or, when nothing was validated, the
    newest not written during a divergence); a checkpoint folder (any folder holding ``model.safetensors``, whatever
    its name) gives its EMA weights unless ``use_ema`` is off. Errors name ``path`` as
    the argument ``what`` (``--weights``, or ``RUN`` for ``restorekit package``).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{what} {path}: expected a .safetensors file, a checkpoint or a run folder")
        return path
    if not path.is_dir():
        raise CheckpointError(f"{what} {path}: no such file or folder")
    if _NAME.match(path.name) or (path / MODEL_FILE).is_file() or (path / EMA_FILE).is_file():
        # A checkpoint folder under any name (copied to best/, say): it holds the weights files.
        ema = path / EMA_FILE
        if use_ema and ema.is_file():
            return ema
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        raise CheckpointError(f"{what} {path}: checkpoint folder without {MODEL_FILE}")
    found = dict(list_checkpoints(path))
    if not found:
        raise CheckpointError(f"{what} {path}: no checkpoints in {path / CKPT_DIR}")
    best = read_best(path)
    if best and best.get("step") in found:
        return resolve_weights(found[best["step"]], use_ema=use_ema, what=what)
    # The newest, unless it was written while the run diverged and an earlier one was not.
    return resolve_weights(last_good(path) or found[max(found)], use_ema=use_ema, what=what)


def run_dir_of(weights: Path) -> Path | None:
    """The run folder a weights path lies in (the folder holding ``recipe.yaml``)."""
    for folder in [weights, *weights.parents][:4]:
        if folder.is_dir() and (folder / "recipe.yaml").is_file():
            return folder
    return None


def load_weights(model: torch.nn.Module, file: str | Path) -> dict[str, Any]:
    """Deprecated: :func:`restorekit.engine.sources.load_source` or :func:`restorekit.io.state_dict.load_state_file`.

    Loads the trainable weights of a file restorekit wrote; returns its safetensors metadata.
    """
    warn_renamed(
        "restorekit.engine.checkpoint.load_weights",
        "restorekit.engine.sources.load_source or restorekit.io.state_dict.load_state_file",
    )
    file = Path(file)
    load_state_file(model, file, targets=trainable_state_dict(model), released=False, architecture="the model")
    if file.suffix != ".safetensors":
        return {}
    with safe_open(str(file), framework="pt") as handle:
        return handle.metadata() or {}
