"""Torch set-up of a run: CPU threads, determinism, TF32 and the precision it trains in.

``train.amp``: ``auto`` is bf16 on CUDA and float32 on the CPU; ``fp16`` (float16 with
loss scaling) needs CUDA; ``bf16`` asked for on the CPU trains in float32 with a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from restorekit.engine.config import TrainConfig
from restorekit.errors import RecipeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """What a run computes in: ``name`` ("fp32", "bf16", "fp16") and the memory format of its batches."""

    name: str
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def autocast(self) -> bool | str:
        """autocast_context's switch: False for float32, else the precision's name."""
        return self.name if self.name != "fp32" else False


def setup_torch(cfg: TrainConfig, device: torch.device, source: str, *, is_main: bool = True) -> Precision:
    """Apply ``train.threads`` / ``deterministic`` to torch and choose the run's precision."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: CUDA has no deterministic backward for bilinear interpolation or
        # reflection padding (the guide's resize, DPC's grid, odd sizes); those warn.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cuda = device.type == "cuda"
    if cfg.amp == "fp16" and not cuda:
        raise RecipeError(
            f"{source}: train.amp=fp16 (float16 with loss scaling) needs a CUDA device; "
            f"this run is on {device}: use train.amp=off (or auto)"
        )
    name = {"auto": "bf16" if cuda else "fp32", "off": "fp32"}.get(cfg.amp, cfg.amp)
    if name == "bf16" and not cuda:
        if is_main:
            logger.warning("train.amp=bf16 applies on CUDA only; training in float32 on the CPU")
        name = "fp32"
    return Precision(name, torch.channels_last if cfg.channels_last else torch.contiguous_format)
