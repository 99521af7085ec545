"""AdaIR (Cui et al., ICLR 2025), the official all-in-one model, official names.

Restormer's U-Net with a frequency module (:class:`~restorekit.bodies.frequency.FreModule`)
after the latent (``fre1``), after decoder level 3 (``fre2``) and after decoder
level 2 (``fre3``); each mines the input image's low and high frequencies at that
level and modulates the feature with them. At the defaults it has 28,784,824
parameters, as the official ``net/model.py`` (``AdaIR(decoder=True)``), of which
43,098 never train (see ``FreModule``), and the released Lightning checkpoints
(``{"state_dict": {"net.<name>": ...}}``) load as they are.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch

from restorekit.bodies.base import Inject, UNetKnobs, check_layout
from restorekit.bodies.frequency import FreModule
from restorekit.bodies.restormer import RestormerUNet
from restorekit.errors import BuildError


class AdaIR(RestormerUNet):
    """AdaIR body and baseline model.

    The Restormer knobs keep their meaning (``inp_channels`` is ``in_channels``,
    ``LayerNorm_type`` is ``layernorm_type``). The frequency modules use
    ``heads[2]`` heads at every level, as published; injection points sit after
    them (``latent`` after ``fre1``, ``decoder3`` after ``fre2``, ``decoder2``
    after ``fre3``) and after decoder level 1 (``decoder1``).
    """

    architecture = "adair"

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        heads: Sequence[int] = (1, 2, 4, 8),
        num_refinement_blocks: int = 4,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layernorm_type: str = "WithBias",
        global_residual: bool = True,
        grad_checkpointing: bool = False,
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        knobs = UNetKnobs.of(locals())
        super().__init__()
        widths = {"fre1": dim * 8, "fre2": dim * 4, "fre3": dim * 2}
        check_layout(
            "adair", dim, num_blocks, heads, layernorm_type,
            [(f"heads[2] (frequency module {k})", c, heads[2]) for k, c in widths.items()],
        )  # fmt: skip
        if dim < 8:
            raise BuildError(f"adair: dim must be >= 8 (fre3's channel gate reduces 2*dim channels 16-fold), got {dim}")
        self._set_residual(global_residual, in_channels, out_channels)
        self.config = knobs.config()
        self._build_unet(knobs, latent_out=dim * 8, decoder3_out=dim * 4)
        self.fre1 = FreModule(widths["fre1"], heads[2], bias, in_dim=in_channels)
        self.fre2 = FreModule(widths["fre2"], heads[2], bias, in_dim=in_channels)
        self.fre3 = FreModule(widths["fre3"], heads[2], bias, in_dim=in_channels)
        self._finish(grad_checkpointing, weights)

    def _forward_padded(self, x: torch.Tensor, inject: Inject) -> torch.Tensor:
        hooks = [functools.partial(module, x) for module in (self.fre1, self.fre2, self.fre3)]
        out = self.output(self._decoder(self._encoder(x), inject, hooks))
        return out + x if self.global_residual else out
