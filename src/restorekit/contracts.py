"""The contract of each kind of part, in code: what the library may rely on.

Every kind is a :class:`typing.Protocol` (``runtime_checkable``, so a part that
lacks a member is refused when it is built, with the member named) and
``docs/interfaces.md`` explains each. The library reads parts through these
contracts and never guesses with ``getattr(part, name, default)``.

Two ideas are defined here once for the whole library:

* **frozen** (:func:`is_frozen`): a part whose ``frozen`` is True. It never
  trains (eval mode, no parameter requires grad), runs under ``no_grad`` in a
  guide pass, is left out of optimizers and training checkpoints, is recorded
  by name and sha256 instead, and makes DDP look for unused parameters when it is
  *not* frozen.
* **auxiliary losses** (:func:`collect_aux_losses`): a module that reports an
  ``aux_loss`` (MSF's load balance, a router's balance loss) has it added to the
  training loss by the engine, whatever loss the recipe chose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from restorekit.errors import BuildError

if TYPE_CHECKING:
    from restorekit.backbones.guide import GuidePass

Guidance = Mapping[str, Callable[[Tensor], Tensor]]
"""Injection point name -> ``feature -> feature`` (same shape), called inside a body."""

LossTerms = dict[str, Tensor]
"""Named, already weighted scalar terms; the training loss is their sum."""


# -- parts that can be frozen ---------------------------------------------------------
@runtime_checkable
class Freezable(Protocol):
    """A part that may be frozen: it says so, and says what its weights are."""

    frozen: bool

    def weights_record(self) -> dict[str, Any]:
        """``{"name", "weights", "sha256"}``; ``weights`` is None for random init."""
        ...


def is_frozen(module: Any) -> bool:
    """The one definition of frozen: a :class:`Freezable` whose ``frozen`` is True."""
    return isinstance(module, Freezable) and bool(module.frozen)


def is_pretrained(part: Freezable) -> bool:
    """Whether the part loaded weights (its record names where they came from)."""
    return part.weights_record().get("weights") is not None


def frozen_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every frozen submodule (``""`` when the model itself is frozen)."""
    return ((name, module) for name, module in model.named_modules() if is_frozen(module))


def check_frozen(part: nn.Module, where: str) -> None:
    """A frozen part holds no trainable parameter; say which ones break that."""
    if not is_frozen(part):
        return
    trainable = [n for n, p in part.named_parameters() if p.requires_grad]
    if trainable:
        raise BuildError(
            f"{where}: {type(part).__name__} says frozen=True but {len(trainable)} of its parameters "
            f"require grad (first: {', '.join(trainable[:3])}); call requires_grad_(False) when frozen"
        )


# -- kinds --------------------------------------------------------------------------------
@runtime_checkable
class Backbone(Freezable, Protocol):
    """A feature extractor: ``forward(x, layers, grid) -> {layer: (B, embed_dim, h, w)}``."""

    embed_dim: int
    num_layers: int
    patch_size: int

    def __call__(self, x: Tensor, layers: Sequence[int], grid: tuple[int, int] | None = None) -> dict[int, Tensor]: ...


@runtime_checkable
class InjectionPointLike(Protocol):
    channels: int
    stride: int


@runtime_checkable
class Body(Protocol):
    """A restoration network with named points where guidance may change its features."""

    pad_multiple: int

    @property
    def injection_points(self) -> Mapping[str, InjectionPointLike]: ...

    def __call__(self, x: Tensor, guidance: Guidance | None = None) -> Tensor: ...


@runtime_checkable
class Fusion(Protocol):
    """L maps ``(B, in_channels, h, w)`` -> one ``(B, out_channels, h, w)``."""

    def __call__(self, feats: Sequence[Tensor]) -> Tensor: ...


@runtime_checkable
class Adapter(Protocol):
    """``(feature, guide) -> feature``: one per injection point; resizes the guide itself."""

    def __call__(self, feature: Tensor, guide: Tensor) -> Tensor: ...


@runtime_checkable
class ReportsAuxLoss(Protocol):
    """A module whose forward leaves an already weighted ``aux_loss`` (or None) behind.

    The value must be set on every forward (None when there is none), so the
    engine never reads a stale one.
    """

    aux_loss: Tensor | None


@runtime_checkable
class SparseGradients(Protocol):
    """A module whose parameters get no gradient on some steps (a routed expert no image chose).

    Such a module sets ``sparse_gradients = True``; DDP then looks for unused parameters,
    and the contract tests excuse it from "every parameter gets a gradient".
    """

    sparse_gradients: bool


def sparse_gradient_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the modules that may go without a gradient on a step."""
    return tuple(f"{name}." for name, module in model.named_modules()
                 if isinstance(module, SparseGradients) and module.sparse_gradients)  # fmt: skip


@runtime_checkable
class Gated(Protocol):
    """A fusion that mixes experts keeps its last gate weights ``(B, K)`` for logging and losses."""

    last_gate: Tensor | None


@runtime_checkable
class GuidedModel(Protocol):
    """A model guided by a backbone; its forward can also hand its loss a :class:`ModelAux`.

    A loss that runs the backbone itself (DPC) asks for layers to be kept from the
    guide pass, and runs its own passes by the model's ``guide_pass`` (the image's
    preparation, the token grid and the windows), exactly as that pass ran.
    """

    backbone: nn.Module
    guide_pass: GuidePass

    def __call__(self, lq: Tensor, return_aux: bool = False) -> Tensor | tuple[Tensor, ModelAux]: ...

    def request_backbone_layers(self, layers: Sequence[int]) -> None: ...


@runtime_checkable
class Loss(Protocol):
    """``(restored, target, *, lq, aux) -> scalar Tensor or LossTerms``."""

    def __call__(
        self, restored: Tensor, target: Tensor, *, lq: Tensor | None = None, aux: ModelAux | None = None
    ) -> Tensor | LossTerms: ...


@runtime_checkable
class BindsToModel(Protocol):
    """A loss that needs the model it trains (DPC shares the model's backbone)."""

    def bind(self, model: nn.Module) -> None: ...


@runtime_checkable
class Metric(Protocol):
    """``metric(pred, target, crop_border=0) -> (B,)`` per image, data range 1.

    ``higher_is_better`` says which way a score improves (PSNR and SSIM: True; an
    error such as MAE: False); the best-checkpoint rule, early stopping and the
    published-number comparison read it (a function metric sets it as an attribute).
    """

    higher_is_better: bool

    def __call__(self, pred: Tensor, target: Tensor, crop_border: int = 0) -> Tensor: ...


@runtime_checkable
class Schedule(Protocol):
    """The learning rate as a pure function of the step (so resume needs only the step)."""

    def __call__(self, step: int) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Degradation(Protocol):
    """``(img (3, H, W) or (B, 3, H, W) in [0, 1], rng) -> img`` of the same shape, dtype and range."""

    def __call__(self, img: Any, rng: Any = None) -> Any: ...


@runtime_checkable
class PairDataset(Protocol):
    """Items ``{"lq", "gt", "task", "name"}`` of (3, H, W) images, by index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


@runtime_checkable
class RunLogger(Protocol):
    """Where a run's records go (``metrics.jsonl``, TensorBoard): rank 0 writes, the loop calls.

    ``write`` takes the records ``metrics.jsonl`` holds (``{"step", "loss", "lr", ...}``,
    ``{"step", "event": "validation", "tasks", "mean"}``, ...); a logger that
    ``takes_images`` also gets the before/after grid of each validation.
    """

    takes_images: bool

    def write(self, record: Mapping[str, Any]) -> None: ...

    def add_images(self, step: int, images: Mapping[str, Tensor]) -> None: ...

    def add_text(self, tag: str, text: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Callback(Protocol):
    """Hears the events of a training run (the ``callback`` kind, ``train.callbacks``).

    The loop calls each hook with itself (``loop``: its step, run folder, best record,
    ``request_stop``) and the event's payload (restorekit.engine.callbacks defines them):
    ``on_train_start(loop, step)`` once before the first step; ``on_step`` after every
    step; ``on_overflow`` after an fp16 scaler skip; ``on_skip`` after a step the NaN
    guard skipped; ``on_validation`` after each validation; ``on_checkpoint`` after each
    checkpoint; ``on_stop`` when the run stops early (a signal or ``request_stop``);
    ``on_train_end(loop, step)`` always, a failing run too (close files there).
    Subclass ``restorekit.engine.callbacks.Callback`` to override only some hooks.
    """

    def on_train_start(self, loop: Any, step: int) -> None: ...

    def on_step(self, loop: Any, event: Any) -> None: ...

    def on_overflow(self, loop: Any, event: Any) -> None: ...

    def on_skip(self, loop: Any, event: Any) -> None: ...

    def on_validation(self, loop: Any, event: Any) -> None: ...

    def on_checkpoint(self, loop: Any, event: Any) -> None: ...

    def on_stop(self, loop: Any, event: Any) -> None: ...

    def on_train_end(self, loop: Any, step: int) -> None: ...


OptimizerFactory = Callable[..., torch.optim.Optimizer]
"""``factory(params, lr, **knobs) -> torch.optim.Optimizer`` (the ``optimizer`` kind)."""

ScheduleFactory = Callable[..., Schedule]
"""``factory(lr, iterations, **knobs) -> Schedule`` (the ``schedule`` kind)."""


# -- the model-to-loss handoff ------------------------------------------------------------
@dataclass
class ModelAux:
    """What a guided model hands its loss besides the restored image.

    A loss reads what it needs by name; a field it needs but finds None means the
    model does not offer it (e.g. no backbone), and the loss says so.
    """

    backbone: nn.Module | None = None  # the frozen guidance backbone (shared, never copied)
    lq_features: Mapping[int, Tensor] = field(default_factory=dict)  # its layers on the degraded input
    grid: tuple[int, int] | None = None  # the token grid of that pass (None: the native grid)
    guide_pass: GuidePass | None = None  # the rule of that pass (preparation, grid, windows)
    guide: Tensor | None = None  # the fused guide
    gate: Tensor | None = None  # fusion gate weights (B, K), when the fusion has a gate


def collect_aux_losses(model: nn.Module) -> LossTerms:
    """``{"aux/<module path>": loss}`` for every module reporting a non-None ``aux_loss``."""
    out: LossTerms = {}
    for name, module in model.named_modules():
        if isinstance(module, ReportsAuxLoss) and module.aux_loss is not None:
            out[f"aux/{name or 'model'}"] = module.aux_loss
    return out


def as_terms(value: Tensor | Mapping[str, Tensor], name: str) -> LossTerms:
    """A loss's result as named terms: a plain scalar becomes ``{name: value}``."""
    if isinstance(value, Tensor):
        return {name: value}
    if isinstance(value, Mapping) and value and all(isinstance(v, Tensor) for v in value.values()):
        return dict(value)
    raise TypeError(f"loss {name!r} returned {type(value).__name__}; expected a scalar Tensor or a dict of them")


def sum_terms(terms: Mapping[str, Tensor], like: Tensor) -> Tensor:
    """The terms added in order (a zero that still backpropagates when there are none)."""
    total: Tensor | None = None
    for value in terms.values():
        total = value if total is None else total + value
    return like.sum() * 0.0 if total is None else total


def check_part(kind: str, part: Any, where: str) -> None:
    """Raise a BuildError naming the members ``part`` lacks for its kind's contract."""
    protocol = PROTOCOLS.get(kind)
    if protocol is None or isinstance(part, protocol):
        return

    missing = [m for m in _members(protocol) if not hasattr(part, m)]
    raise BuildError(
        f"{where}: {type(part).__name__} does not keep the {kind} contract "
        f"(missing: {', '.join(missing) or 'a compatible __call__'}; see docs/interfaces.md)"
    )


# The special methods a contract may ask for (a Protocol class holds other dunders of its own).
_CONTRACT_DUNDERS = frozenset({"__call__", "__len__", "__getitem__"})


def _members(protocol: type) -> Iterable[str]:
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (object, Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        names.update(getattr(klass, "__annotations__", {}))
        names.update(n for n, v in vars(klass).items() if (callable(v) or isinstance(v, property))
                     and (not n.startswith("_") or n in _CONTRACT_DUNDERS))  # fmt: skip
    return sorted(names)


PROTOCOLS: dict[str, type] = {
    "backbone": Backbone,
    "body": Body,
    "fusion": Fusion,
    "adapter": Adapter,
    "loss": Loss,
    "metric": Metric,
    "schedule": Schedule,
    "logger": RunLogger,
    "callback": Callback,
    "degradation": Degradation,
    "dataset": PairDataset,
}
