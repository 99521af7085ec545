"""Frequency losses: MoCE-IR's FFT loss (its ``--loss_type fft``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from restorekit.contracts import ModelAux


class FFTLoss(nn.Module):
    """Mean absolute error between the real and imaginary parts of the images' 2-D real FFTs.

    As the official ``FFTLoss``: ``rfft2`` over height and width (no normalisation),
    real and imaginary parts stacked, L1 mean. The weight goes in the recipe
    (``weighted_sum`` term ``{type: fft, weight: 0.1}``). The transform runs in
    float32, so the loss also works under bf16 autocast (cuFFT has no bf16).
    """

    def forward(
        self, restored: Tensor, target: Tensor, *, lq: Tensor | None = None, aux: ModelAux | None = None
    ) -> Tensor:
        spectrum = torch.fft.rfft2((restored - target).float())  # rfft2 is linear: one transform
        return torch.view_as_real(spectrum).abs().mean()
