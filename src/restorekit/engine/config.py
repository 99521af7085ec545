"""The recipe's ``train:`` and ``eval:`` sections as validated dataclasses.

A typo or a wrong type is a :class:`RecipeError` naming the dotted key (and the
close matches for an unknown key), raised before any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

from restorekit.errors import RecipeError


@dataclass
class TrainConfig:
    """Keys of a recipe's ``train:`` section (docs/training.md explains each)."""

    iterations: int = 1000
    batch_size: int = 8  # the GLOBAL batch; each of N ranks takes batch_size / N
    lr: float = 2e-4
    min_lr: float = 1e-6
    warmup_iters: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    grad_clip: Optional[float] = 1.0  # max gradient norm; null or 0 switches clipping off
    ema_decay: Optional[float] = 0.999  # null switches EMA off
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) after n updates
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False
    channels_last: bool = False
    deterministic: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Optional[int] = None  # torch CPU threads per process
    seed: int = 0
    log_every: int = 10
    val_every: int = 0  # 0: no periodic validation
    val_max_images: Optional[int] = None  # per task, to keep validation short
    ckpt_every: int = 1000  # a checkpoint is also written at the last iteration
    keep_last: int = 2
    keep_best: bool = True
    max_nonfinite: int = 20  # this many skipped (non-finite) steps in a row abort the run
    out_dir: Optional[str] = None  # default runs/<recipe name>-<timestamp>
    progress: bool = True

    def check(self, source: str) -> None:
        positive = ["iterations", "batch_size", "log_every", "ckpt_every", "keep_last", "max_nonfinite"]
        for key in positive:
            if getattr(self, key) < 1:
                raise RecipeError(f"{source}: train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ["warmup_iters", "val_every", "weight_decay", "min_lr"]:
            if getattr(self, key) < 0:
                raise RecipeError(f"{source}: train.{key} must be >= 0, got {getattr(self, key)}")
        if self.lr <= 0:
            raise RecipeError(f"{source}: train.lr must be > 0, got {self.lr}")
        if self.warmup_iters >= self.iterations:
            # Not an error: shrinking train.iterations for a quick run should not also
            # require shrinking the warmup. The schedule keeps one step for the decay.
            warnings.warn(
                f"{source}: train.warmup_iters ({self.warmup_iters}) >= train.iterations ({self.iterations}); "
                f"the warmup is shortened to {self.iterations - 1} step(s) so the rate can decay to "
                f"train.min_lr at the last step",
                stacklevel=2,
            )
        if self.min_lr > self.lr:
            raise RecipeError(f"{source}: train.min_lr ({self.min_lr}) exceeds train.lr ({self.lr})")
        if not all(0 <= b < 1 for b in self.betas):
            raise RecipeError(f"{source}: train.betas must lie in [0, 1), got {list(self.betas)}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise RecipeError(f"{source}: train.ema_decay must lie in [0, 1) or be null, got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise RecipeError(f"{source}: train.grad_clip must be >= 0 or null, got {self.grad_clip}")
        for key in ["threads", "val_max_images"]:
            value = getattr(self, key)
            if value is not None and value < 1:
                raise RecipeError(f"{source}: train.{key} must be >= 1 or null, got {value}")


@dataclass
class EvalConfig:
    """Keys of a recipe's ``eval:`` section (docs/inference.md explains each)."""

    crop_multiple: int = 16  # crop test images to a multiple of this; 0 = full image
    color: Literal["rgb", "y"] = "rgb"  # metrics on RGB, or on the BT.601 Y channel
    crop_border: int = 0
    use_ema: bool = True
    tile: Optional[int] = None  # tiled inference for large test images
    overlap: int = 32
    max_images: Optional[int] = None  # per task
    after_train: bool = False  # evaluate the final weights when training ends
    grid: bool = False  # write a before/after PNG grid into the run folder
    grid_images: int = 1  # images per task in the grid
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim"])

    def check(self, source: str) -> None:
        for key in ["crop_multiple", "crop_border", "overlap"]:
            if getattr(self, key) < 0:
                raise RecipeError(f"{source}: eval.{key} must be >= 0, got {getattr(self, key)}")
        if self.tile is not None and self.tile <= 2 * (self.overlap // 4) + 8:
            raise RecipeError(f"{source}: eval.tile ({self.tile}) is too small for eval.overlap ({self.overlap})")
        if self.tile is not None and self.overlap >= self.tile:
            raise RecipeError(f"{source}: eval.overlap ({self.overlap}) must be smaller than eval.tile ({self.tile})")
        if self.grid_images < 1:
            raise RecipeError(f"{source}: eval.grid_images must be >= 1, got {self.grid_images}")
        if self.max_images is not None and self.max_images < 1:
            raise RecipeError(f"{source}: eval.max_images must be >= 1 or null, got {self.max_images}")
        unknown = [m for m in self.metrics if m not in ("psnr", "ssim")]
        if unknown:
            raise RecipeError(f"{source}: eval.metrics has unknown {unknown} (known: psnr, ssim; "
                              f"eval.color picks RGB or Y)")


C = typing.TypeVar("C")


def section_from_mapping(cls: type[C], data: Mapping[str, Any] | None, section: str, source: str) -> C:
    """Build the dataclass ``cls`` from a recipe section, checking names and types."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RecipeError(f"{source}: key {section!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RecipeError(f"{source}: unknown key {section}.{key}{hint} (known: {', '.join(names)})")
        values[key] = _coerce(value, hints[key], f"{section}.{key}", source)
    obj = cls(**values)
    obj.check(source)  # type: ignore[attr-defined]
    return obj


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin is Literal:
        if value not in args:
            raise RecipeError(f"{source}: {key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{source}: {key} must be a list, got {value!r}")
        if origin is tuple and len(value) != len(args):
            raise RecipeError(f"{source}: {key} must have {len(args)} values, got {list(value)!r}")
        items = args if origin is tuple else args * len(value)
        out = [_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, items))]
        return tuple(out) if origin is tuple else out
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{source}: {key} must be a string, got {value!r}")
        return value
    return value


def train_config(recipe: Mapping[str, Any], source: str = "recipe") -> TrainConfig:
    """The validated ``train:`` section of a resolved recipe."""
    return section_from_mapping(TrainConfig, recipe.get("train"), "train", source)


def eval_config(recipe: Mapping[str, Any], source: str = "recipe") -> EvalConfig:
    """The validated ``eval:`` section of a resolved recipe."""
    return section_from_mapping(EvalConfig, recipe.get("eval"), "eval", source)
