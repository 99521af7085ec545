"""Builtin optimizers (the ``optimizer`` kind): ``factory(params, lr, **knobs) -> Optimizer``.

A recipe picks one with ``train.optimizer: {type: adamw, weight_decay: 0.01}``; the
engine passes the trainable parameters and ``train.lr`` (the rate is then set every
step from the schedule). A plugin adds its own under the ``restorekit.optimizers``
entry-point group with the same signature.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from restorekit.errors import BuildError

Params = Iterable[torch.nn.Parameter]


def _betas(name: str, betas: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(b) for b in betas)
    if len(values) != 2 or not all(0 <= b < 1 for b in values):
        raise BuildError(f"{name}: betas must be two numbers in [0, 1), got {list(betas)}")
    return values  # type: ignore[return-value]


def _non_negative(name: str, **values: float) -> None:
    for key, value in values.items():
        if value < 0:
            raise BuildError(f"{name}: {key} must be >= 0, got {value}")


def adamw(
    params: Params, lr: float, betas: Sequence[float] = (0.9, 0.999), weight_decay: float = 0.01, eps: float = 1e-8
) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay), restorekit's default."""
    _non_negative("adamw", weight_decay=weight_decay, eps=eps)
    return torch.optim.AdamW(params, lr=lr, betas=_betas("adamw", betas), weight_decay=weight_decay, eps=eps)


def adam(
    params: Params, lr: float, betas: Sequence[float] = (0.9, 0.999), weight_decay: float = 0.0, eps: float = 1e-8
) -> torch.optim.Optimizer:
    """Adam (L2 weight decay added to the gradient), as PromptIR and Restormer train."""
    _non_negative("adam", weight_decay=weight_decay, eps=eps)
    return torch.optim.Adam(params, lr=lr, betas=_betas("adam", betas), weight_decay=weight_decay, eps=eps)


def sgd(
    params: Params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False
) -> torch.optim.Optimizer:
    """SGD with momentum."""
    _non_negative("sgd", momentum=momentum, weight_decay=weight_decay)
    if nesterov and momentum <= 0:
        raise BuildError("sgd: nesterov needs momentum > 0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
