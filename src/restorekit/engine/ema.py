"""Exponential moving average of a model's trainable state (parameters and buffers).

The average covers exactly the tensors a checkpoint holds
(:func:`restorekit.frozen.trainable_state_dict`), so frozen backbones are neither
copied nor averaged. Evaluation swaps the average in and back out bitwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from restorekit.frozen import trainable_state_dict


class EMA:
    """Shadow copy of the trainable state, updated after every optimizer step."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in trainable_state_dict(model).items()}

    def current_decay(self) -> float:
        """The decay of the next update (ramps up from 0.1 with warmup, as TF's EMA)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        state = trainable_state_dict(model)
        floats_avg, floats_new = [], []
        for key, avg in self.shadow.items():
            new = state[key].detach()
            if avg.is_floating_point():
                floats_avg.append(avg)
                floats_new.append(new.to(avg.dtype))
            else:
                avg.copy_(new)
        if floats_avg:
            torch._foreach_lerp_(floats_avg, floats_new, 1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks {missing[:5]}")
        for key, avg in self.shadow.items():
            avg.copy_(state[key])
        self.updates = updates

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run ``model`` with the averaged weights, then restore its own exactly."""
        state = trainable_state_dict(model)
        backup = {k: v.detach().clone() for k, v in state.items()}
        with torch.no_grad():
            for key, value in state.items():
                value.copy_(self.shadow[key])
        try:
            yield model
        finally:
            with torch.no_grad():
                for key, value in state.items():
                    value.copy_(backup[key])
