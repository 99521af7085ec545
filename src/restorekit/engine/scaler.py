"""Loss scaling for fp16 training (``train.amp: fp16``), for GPUs without bf16 (V100, T4).

fp16 has a narrow range: small gradients underflow to zero unless the loss is scaled
up before backward, and a scale that is too large overflows them to inf. torch's
``GradScaler`` starts high and halves the scale whenever gradients come out
non-finite (the step is skipped), and doubles it after a run of good steps.

The engine's NaN guard tells the two kinds of non-finite step apart:

* a **scaler skip**: the loss is finite and only the scaled gradients overflowed; the
  scale is lowered and the step skipped, as GradScaler intends. It is logged
  (``{"event": "scaler_skip", "scale": ...}``) but is no sign of divergence and does not
  count towards ``train.max_nonfinite``;
* a **divergence**: the loss itself is not finite, or the gradients stay non-finite
  even though the scale has fallen below :data:`MIN_SCALE` (1: the unscaled gradients
  overflow). It is the NaN guard's ordinary skip and counts.

The wrapper is inactive (every method a pass-through) unless fp16 is asked for, so the
step reads the same for fp32, bf16 and fp16.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

MIN_SCALE = 1.0


class LossScaling:
    """A ``torch.amp.GradScaler`` when ``enabled``; a pass-through otherwise."""

    def __init__(self, enabled: bool, device: torch.device, scaler: Any = None) -> None:
        self.scaler = scaler if scaler is not None else (torch.amp.GradScaler(device.type) if enabled else None)

    @property
    def active(self) -> bool:
        return self.scaler is not None

    def scale(self, loss: Tensor) -> Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the scale in place (before clipping and the guard)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def update(self) -> None:
        """Lower the scale after an overflow, raise it after a run of good steps (on the device).

        The optimizer step itself is taken (or not) by the NaN guard, which has already
        read whether the gradients are finite: ``GradScaler.step`` would read it again.
        """
        if self.scaler is not None:
            self.scaler.update()

    def current_scale(self) -> float:
        """The scale now (a host read: for skip reports and logs only)."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def is_overflow(self, loss_finite: bool, grads_finite: bool) -> bool:
        """A non-finite step that is the scaler's business, not a divergence (see module doc)."""
        return self.scaler is not None and loss_finite and not grads_finite and self.current_scale() >= MIN_SCALE

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(dict(state))
