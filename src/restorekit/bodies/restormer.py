"""Restormer (Zamir et al., CVPR 2022), the official architecture with the official names.

A 4-level U-Net of transformer blocks (MDTA + GDFN): encoder levels at strides
1, 2, 4, a latent at stride 8, decoder levels back up with skip connections,
refinement blocks at full resolution and a global residual. At the defaults it
has 26,126,644 parameters, and the released ``.pth`` files (weights under
``params``) load as they are.

:class:`RestormerUNet` is the skeleton PromptIR shares; it exposes hooks where
PromptIR inserts its prompt blocks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from restorekit.bodies.base import Inject, UNetBody, UNetKnobs, check_layout
from restorekit.bodies.blocks import Downsample, OverlapPatchEmbed, Upsample, transformer_stage
from restorekit.bodies.points import InjectionPoint

Hook = Callable[[torch.Tensor], torch.Tensor]


class RestormerUNet(UNetBody):
    """The Restormer U-Net; ``latent_out`` is the width the decoder receives at stride 8.

    Injection points sit on the feature each stage hands on: ``latent`` after
    the latent stage (and its hook), ``decoder3``/``decoder2`` after those decoder
    stages (and hooks), ``decoder1`` after decoder level 1, before refinement.
    """

    def _build_unet(self, knobs: UNetKnobs, *, latent_out: int, decoder3_out: int) -> None:
        dim, bias = knobs.dim, knobs.bias

        def stage(width: int, n_heads: int, depth: int) -> nn.Sequential:
            return transformer_stage(width, n_heads, depth, knobs.ffn_expansion_factor, bias, knobs.layernorm_type)

        n1, n2, n3, n4 = (int(n) for n in knobs.num_blocks)
        h1, h2, h3, h4 = (int(h) for h in knobs.heads)
        self.patch_embed = OverlapPatchEmbed(knobs.in_channels, dim)
        self.encoder_level1 = stage(dim, h1, n1)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = stage(dim * 2, h2, n2)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = stage(dim * 4, h3, n3)
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(dim * 8, h4, n4)
        self.up4_3 = Upsample(latent_out)
        self.reduce_chan_level3 = nn.Conv2d(latent_out // 2 + dim * 4, dim * 4, 1, bias=bias)
        self.decoder_level3 = stage(dim * 4, h3, n3)
        self.up3_2 = Upsample(decoder3_out)
        self.reduce_chan_level2 = nn.Conv2d(decoder3_out // 2 + dim * 2, dim * 2, 1, bias=bias)
        self.decoder_level2 = stage(dim * 2, h2, n2)
        self.up2_1 = Upsample(dim * 2)  # no channel reduction at level 1 (as published)
        self.decoder_level1 = stage(dim * 2, h1, n1)
        self.refinement = stage(dim * 2, h1, int(knobs.num_refinement_blocks))
        self.output = nn.Conv2d(dim * 2, knobs.out_channels, 3, padding=1, bias=bias)
        self._set_points(
            {
                "latent": InjectionPoint(latent_out, 8),
                "decoder3": InjectionPoint(decoder3_out, 4),
                "decoder2": InjectionPoint(dim * 2, 2),
                "decoder1": InjectionPoint(dim * 2, 1),
            }
        )

    # Hooks PromptIR overrides (identity here).
    def _after_latent(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _after_decoder3(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _after_decoder2(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _encoder(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[embedding, level1, level2, level3, latent] of a padded input."""
        embedded = self.patch_embed(x)
        e1 = self.encoder_level1(embedded)
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        return [embedded, e1, e2, e3, self.latent(self.down3_4(e3))]

    def _encode_padded(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _, e1, e2, e3, e4 = self._encoder(x)
        return {"level1": e1, "level2": e2, "level3": e3, "level4": e4}

    def _decoder(self, feats: list[torch.Tensor], inject: Inject, hooks: Sequence[Hook] = ()) -> torch.Tensor:
        """Decoder and refinement; returns the full-resolution feature before ``output``.

        ``hooks`` replace the ``_after_*`` hooks (latent, decoder3, decoder2) for a
        body whose hooks need more than the feature (AdaIR's need the input image).
        """
        _, e1, e2, e3, latent = feats
        after_latent, after_decoder3, after_decoder2 = hooks or (
            self._after_latent,
            self._after_decoder3,
            self._after_decoder2,
        )
        latent = inject("latent", after_latent(latent))
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), e3], 1)))
        d3 = inject("decoder3", after_decoder3(d3))
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)))
        d2 = inject("decoder2", after_decoder2(d2))
        d1 = inject("decoder1", self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1)))
        return self.refinement(d1)

    def _forward_padded(self, x: torch.Tensor, inject: Inject) -> torch.Tensor:
        out = self.output(self._decoder(self._encoder(x), inject))
        return out + x if self.global_residual else out


class Restormer(RestormerUNet):
    """Restormer body and baseline model.

    Knobs follow the official constructor (``inp_channels`` is ``in_channels``,
    ``LayerNorm_type`` is ``layernorm_type``). ``layernorm_type='BiasFree'`` fits the
    released Gaussian/real denoising weights; ``dual_pixel_task=True`` (with
    ``in_channels=6``) the dual-pixel defocus weights. ``global_residual`` defaults
    to on, except for the dual-pixel model (which has none). ``weights`` loads a
    file at build time (see :meth:`load_weights`).
    """

    architecture = "restormer"

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
        global_residual: bool | None = None,
        dual_pixel_task: bool = False,
        grad_checkpointing: bool = False,
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        knobs = UNetKnobs.of(locals())
        super().__init__()
        check_layout("restormer", dim, num_blocks, heads, layernorm_type)
        self._set_residual(
            not dual_pixel_task if global_residual is None else global_residual, in_channels, out_channels
        )
        self.dual_pixel_task = bool(dual_pixel_task)
        self.config = knobs.config(dual_pixel_task=self.dual_pixel_task)
        self._build_unet(knobs, latent_out=dim * 8, decoder3_out=dim * 4)
        if self.dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self._finish(grad_checkpointing, weights)

    def _forward_padded(self, x: torch.Tensor, inject: Inject) -> torch.Tensor:
        if not self.dual_pixel_task:
            return super()._forward_padded(x, inject)
        feats = self._encoder(x)
        out = self.output(self._decoder(feats, inject) + self.skip_conv(feats[0]))
        return out + x if self.global_residual else out
