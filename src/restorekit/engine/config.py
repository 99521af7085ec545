"""The recipe's ``train:`` and ``eval:`` sections as validated dataclasses.

A typo or a wrong type is a :class:`RecipeError` naming the dotted key (and the
close matches for an unknown key), raised before any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch

from restorekit.building import build, check_keywords, merge_spec, split_spec
from restorekit.engine.loggers import missing_extra
from restorekit.errors import Problems, RecipeError, RestorekitError
from restorekit.registry import registry

DEFAULT_OPTIMIZER: dict[str, Any] = {"type": "adamw", "betas": [0.9, 0.999], "weight_decay": 0.01}
DEFAULT_SCHEDULE: dict[str, Any] = {"type": "warmup_cosine", "warmup_iters": 0, "min_lr": 1e-6}
DEFAULT_LR = 2e-4
# Keys that were flat in train: before the optimizer and schedule became specs.
_MOVED = {"min_lr": "train.schedule.min_lr", "warmup_iters": "train.schedule.warmup_iters",
          "betas": "train.optimizer.betas", "weight_decay": "train.optimizer.weight_decay"}  # fmt: skip


@dataclass
class TrainConfig:
    """Keys of a recipe's ``train:`` section (docs/training.md explains each)."""

    iterations: int = 1000
    batch_size: int = 8  # the GLOBAL batch (one optimizer step): ranks x accumulate x micro-batch
    accumulate: int = 1  # micro-batches per optimizer step; each rank's micro-batch is batch_size / (N * accumulate)
    lr: float = DEFAULT_LR  # the peak rate; the schedule scales it per step
    optimizer: Any = field(default_factory=lambda: dict(DEFAULT_OPTIMIZER))  # an optimizer spec
    schedule: Any = field(default_factory=lambda: dict(DEFAULT_SCHEDULE))  # a schedule spec
    grad_clip: Optional[float] = 1.0  # max gradient norm; null or 0 switches clipping off
    ema_decay: Optional[float] = 0.999  # null switches EMA off
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) after n updates
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU; fp16: loss scaling
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
    best_metric: Optional[str] = None  # the validation mean that picks the best checkpoint; null: eval.metrics[0]
    best_mode: Optional[Literal["max", "min"]] = None  # null: the metric's own direction (its higher_is_better)
    max_nonfinite: int = 20  # this many skipped (non-finite) steps in a row abort the run
    out_dir: Optional[str] = None  # default runs/<recipe name>-<timestamp>
    init_weights: Optional[str] = None  # start from these weights (any --weights source); resume wins over it
    progress: bool = True
    loggers: list[Any] = field(default_factory=lambda: ["jsonl"])  # logger specs: jsonl, tensorboard, plugins
    callbacks: list[Any] = field(default_factory=list)  # callback specs: early_stopping, plugins

    def check(self, source: str, problems: Problems | None = None) -> None:
        problems = Problems() if problems is None else problems
        report = problems.report
        positive = ["iterations", "batch_size", "accumulate", "log_every", "ckpt_every", "keep_last", "max_nonfinite"]
        for key in positive:
            if getattr(self, key) < 1:
                report(f"{source}: train.{key} must be >= 1, got {getattr(self, key)}", f"train.{key}")
        if self.val_every < 0:
            report(f"{source}: train.val_every must be >= 0, got {self.val_every}", "train.val_every")
        if self.lr <= 0:
            report(f"{source}: train.lr must be > 0, got {self.lr}", "train.lr")
        with problems.gather("train.optimizer"):
            self.optimizer = _spec(DEFAULT_OPTIMIZER, self.optimizer, "train.optimizer", source)
            # Both are cheap to build: a bad knob fails here, before any model is built.
            check_spec_keywords("optimizer", self.optimizer, f"{source}: train.optimizer", ("params", "lr"))
            lr = self.lr if self.lr > 0 else DEFAULT_LR  # a bad lr is reported once, above
            _try_build("optimizer", self.optimizer, f"{source}: train.optimizer", params=[_probe_parameter()], lr=lr)
        with problems.gather("train.schedule"):
            self.schedule = _spec(DEFAULT_SCHEDULE, self.schedule, "train.schedule", source)
            if self.lr > 0 and self.iterations >= 1:
                build_schedule(self, source)
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            report(f"{source}: train.ema_decay must lie in [0, 1) or be null, got {self.ema_decay}", "train.ema_decay")
        if self.grad_clip is not None and self.grad_clip < 0:
            report(f"{source}: train.grad_clip must be >= 0 or null, got {self.grad_clip}", "train.grad_clip")
        for key in ["threads", "val_max_images"]:
            value = getattr(self, key)
            if value is not None and value < 1:
                report(f"{source}: train.{key} must be >= 1 or null, got {value}", f"train.{key}")
        if self.accumulate >= 1 and self.batch_size % self.accumulate:
            report(
                f"{source}: train.batch_size ({self.batch_size}) is the global batch and must be "
                f"divisible by train.accumulate ({self.accumulate})",
                "train.batch_size",
            )
        check_logger_specs(self.loggers, source, problems)
        for i, spec in enumerate(self.callbacks):
            with problems.gather(f"train.callbacks[{i}]"):
                check_spec_keywords("callback", spec, f"{source}: train.callbacks[{i}]")


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
    metrics: list[Any] = field(default_factory=lambda: ["psnr", "ssim"])  # metric specs (names or mappings)
    self_ensemble: bool = False  # x8 self-ensemble (flips and rotations) at test time
    # Named test suites beside data.val, each a mapping task -> entry as in data.val
    # (e.g. unseen: sets the model never trained on); `restorekit eval --suite NAME`.
    suites: dict[str, Any] = field(default_factory=dict)

    def check(self, source: str, problems: Problems | None = None) -> None:
        problems = Problems() if problems is None else problems
        report = problems.report
        for key in ["crop_multiple", "crop_border", "overlap"]:
            if getattr(self, key) < 0:
                report(f"{source}: eval.{key} must be >= 0, got {getattr(self, key)}", f"eval.{key}")
        if self.tile is not None and self.tile <= 2 * (self.overlap // 4) + 8:
            report(f"{source}: eval.tile ({self.tile}) is too small for eval.overlap ({self.overlap})", "eval.tile")
        elif self.tile is not None and self.overlap >= self.tile:
            report(
                f"{source}: eval.overlap ({self.overlap}) must be smaller than eval.tile ({self.tile})", "eval.overlap"
            )
        if self.grid_images < 1:
            report(f"{source}: eval.grid_images must be >= 1, got {self.grid_images}", "eval.grid_images")
        if self.max_images is not None and self.max_images < 1:
            report(f"{source}: eval.max_images must be >= 1 or null, got {self.max_images}", "eval.max_images")
        if not self.metrics:
            report(f"{source}: eval.metrics must name at least one metric", "eval.metrics")
        names = []
        for i, spec in enumerate(self.metrics):
            with problems.gather(f"eval.metrics[{i}]"):
                names.append(metric_name(spec, f"{source}: eval.metrics[{i}]"))
                # Cheap to build (the function, its knobs bound): its keywords and contract are checked here.
                _try_build("metric", _without_name(spec), f"{source}: eval.metrics[{i}]")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            report(f"{source}: eval.metrics names {repeated} twice (give one a 'name:')", "eval.metrics")
        if not isinstance(self.suites, Mapping):
            report(f"{source}: eval.suites must map suite names to test tasks, got {self.suites!r}", "eval.suites")
        else:
            for name, tasks in self.suites.items():
                if not isinstance(tasks, Mapping) or not tasks:
                    report(
                        f"{source}: eval.suites.{name} must map task names to data.val-style entries",
                        f"eval.suites.{name}",
                    )

    def metric_names(self) -> list[str]:
        """The names validation rows and ``train.best_metric`` use, in order."""
        return [metric_name(spec, "eval.metrics") for spec in self.metrics]

    def named_metric_specs(self) -> dict[str, Any]:
        """Row name -> the metric's spec (without its ``name:``), in order."""
        return {metric_name(spec, "eval.metrics"): _without_name(spec) for spec in self.metrics}


C = typing.TypeVar("C")


def section_from_mapping(
    cls: type[C], data: Mapping[str, Any] | None, section: str, source: str, problems: Problems | None = None
) -> C:
    """Build the dataclass ``cls`` from a recipe section, checking names and types.

    With a collecting ``problems``, every bad key is reported and left at its default.
    """
    problems = Problems() if problems is None else problems
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.report(f"{source}: key {section!r} must be a mapping, got {type(data).__name__}", section)
        data = {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{section}.{key}"
        if section == "train" and key in _MOVED:
            problems.report(f"{source}: train.{key} has moved to {_MOVED[key]} (see docs/training.md)", where)
        elif key not in hints:
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            problems.report(f"{source}: unknown key {section}.{key}{hint} (known: {', '.join(names)})", where)
        else:
            with problems.gather(where):
                values[key] = _coerce(value, hints[key], where, source)
    obj = cls(**values)
    obj.check(source, problems)  # type: ignore[attr-defined]
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


def train_config(recipe: Mapping[str, Any], source: str = "recipe", problems: Problems | None = None) -> TrainConfig:
    """The validated ``train:`` section of a resolved recipe."""
    return section_from_mapping(TrainConfig, recipe.get("train"), "train", source, problems)


def eval_config(recipe: Mapping[str, Any], source: str = "recipe", problems: Problems | None = None) -> EvalConfig:
    """The validated ``eval:`` section of a resolved recipe."""
    return section_from_mapping(EvalConfig, recipe.get("eval"), "eval", source, problems)


def check_best_metric(cfg: TrainConfig, eval_cfg: EvalConfig, source: str, problems: Problems | None = None) -> None:
    """``train.best_metric`` must name one of the ``eval.metrics`` rows (null: the first one)."""
    if cfg.best_metric is not None and cfg.best_metric not in eval_cfg.metric_names():
        (Problems() if problems is None else problems).report(
            f"{source}: train.best_metric {cfg.best_metric!r} is not among eval.metrics "
            f"({', '.join(eval_cfg.metric_names())})",
            "train.best_metric",
        )


def _spec(default: Mapping[str, Any], value: Any, key: str, source: str) -> dict[str, Any]:
    """The recipe's spec merged onto the default (a name or another ``type`` replaces it whole)."""
    if value is not None and not isinstance(value, (str, Mapping)):
        raise RecipeError(f"{source}: {key} must be a name or a mapping with 'type', got {value!r}")
    return dict(merge_spec(default, value))


def _without_name(spec: Any) -> Any:
    return {k: v for k, v in spec.items() if k != "name"} if isinstance(spec, Mapping) else spec


def metric_name(spec: Any, where: str) -> str:
    """A metric spec's row name: its ``name:``, else its type."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping) and isinstance(spec.get("name", spec.get("type")), str):
        return str(spec.get("name", spec["type"]))
    raise RecipeError(f"{where} must be a metric name or a mapping with 'type', got {spec!r}")


def check_spec_keywords(kind: str, spec: Any, where: str, given: tuple[str, ...] = ()) -> None:
    """The part exists and takes the spec's keywords (plus those the engine passes), or a RecipeError."""
    try:
        name, kwargs = split_spec(kind, spec)
        check_keywords(kind, name, registry(kind).get(name), {**kwargs, **dict.fromkeys(given)}, engine_given=given)
    except RestorekitError as exc:
        raise RecipeError(f"{where}: {exc}") from exc


def _try_build(kind: str, spec: Any, where: str, **extra: Any) -> Any:
    """``build(kind, spec, **extra)``, its errors turned into a RecipeError naming ``where``."""
    try:
        return build(kind, spec, **extra)
    except (RestorekitError, ValueError, TypeError) as exc:
        raise RecipeError(f"{where}: {exc}") from exc


def _probe_parameter() -> Any:
    return torch.nn.Parameter(torch.zeros(1))


def check_logger_specs(specs: list[Any], source: str, problems: Problems | None = None) -> None:
    """Each ``train.loggers`` entry names a logger that takes its knobs and whose packages are installed."""
    problems = Problems() if problems is None else problems
    names = []
    for i, spec in enumerate(specs):
        key = f"train.loggers[{i}]"
        where = f"{source}: {key}"
        if not isinstance(spec, (str, Mapping)):
            problems.report(f"{where} must be a logger name or a mapping with 'type', got {spec!r}", key)
            continue
        with problems.gather(key):
            check_spec_keywords("logger", spec, where, ("run_dir",))
            name = spec if isinstance(spec, str) else str(spec.get("type"))
            problem = missing_extra(name)
            if problem:
                raise RecipeError(f"{where}: {problem}")
            names.append(name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.report(f"{source}: train.loggers names {repeated} twice", "train.loggers")


def build_schedule(cfg: TrainConfig, source: str = "recipe") -> Any:
    """The recipe's schedule, built through the registry (errors and warnings name ``train.schedule``)."""
    where = f"{source}: train.schedule"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schedule = _try_build("schedule", cfg.schedule, where, lr=cfg.lr, iterations=cfg.iterations)
    for warning in caught:
        warnings.warn(f"{where}: {warning.message}", warning.category, stacklevel=2)
    return schedule
