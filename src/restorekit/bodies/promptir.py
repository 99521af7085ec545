"""PromptIR (Potlapalli et al., NeurIPS 2023), the official all-in-one model, official names.

Restormer's U-Net with a prompt block at three decoder points: at the latent,
after decoder level 3 and after decoder level 2. A prompt block picks a mix of
learned prompts from the feature's global average (linear layer + softmax),
resizes it to the feature, and a transformer block plus a 1x1 convolution fuse
feature and prompt. The latent prompt block also reduces the latent from
``8*dim`` (384) to ``4*dim`` (192) channels. At the defaults it has 35,376,967
parameters.

The official file also builds six modules its forward never uses
(``chnl_reduce1-3``, ``reduce_noise_channel_1-3``, 215,296 parameters). They are
not built here, so training needs no ``find_unused_parameters``; their keys in a
released checkpoint are accepted and reported when loading.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from restorekit.bodies.base import UNetKnobs, check_layout
from restorekit.bodies.blocks import TransformerBlock
from restorekit.bodies.restormer import RestormerUNet
from restorekit.errors import BuildError

UNUSED_OFFICIAL_MODULES = (
    "chnl_reduce1",
    "chnl_reduce2",
    "chnl_reduce3",
    "reduce_noise_channel_1",
    "reduce_noise_channel_2",
    "reduce_noise_channel_3",
)


class PromptGenBlock(nn.Module):
    """Prompt generation: ``prompt_len`` learned prompts, mixed per image, resized, 3x3 conv.

    ``lin_dim`` is the channel count of the feature that chooses the mix; the
    output has ``prompt_dim`` channels at the feature's resolution.
    """

    def __init__(self, prompt_dim: int, prompt_len: int, prompt_size: int, lin_dim: int) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix = F.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)  # (B, prompt_len)
        prompt = (mix[:, :, None, None, None] * self.prompt_param).sum(dim=1)
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv3x3(prompt)


class PromptIR(RestormerUNet):
    """PromptIR body and baseline model (the official ``PromptIR(decoder=True)``).

    The Restormer knobs keep their meaning. ``prompt_dims``, ``prompt_sizes``
    (for prompt1 after decoder level 2, prompt2 after decoder level 3, prompt3 at
    the latent) and ``prompt_len`` set the prompt blocks; the official values are
    (64, 128, 320), (64, 32, 16) and 5. The prompt fusion blocks use ``heads[2]``
    heads, as published.
    """

    architecture = "promptir"
    unused_official_modules = UNUSED_OFFICIAL_MODULES

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
        prompt_dims: Sequence[int] = (64, 128, 320),
        prompt_sizes: Sequence[int] = (64, 32, 16),
        prompt_len: int = 5,
        grad_checkpointing: bool = False,
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        knobs = UNetKnobs.of(locals())
        super().__init__()
        if len(prompt_dims) != 3 or len(prompt_sizes) != 3:
            raise BuildError(
                f"promptir: prompt_dims and prompt_sizes need 3 values each, "
                f"got {list(prompt_dims)} and {list(prompt_sizes)}"
            )
        if int(prompt_len) < 1 or any(int(v) < 1 for v in (*prompt_dims, *prompt_sizes)):
            raise BuildError("promptir: prompt_len, prompt_dims and prompt_sizes must be positive")
        p1, p2, p3 = (int(p) for p in prompt_dims)
        fused = {"prompt1": dim * 2 + p1, "prompt2": dim * 4 + p2, "prompt3": dim * 8 + p3}
        check_layout(
            "promptir", dim, num_blocks, heads, layernorm_type,
            [(f"heads[2] (fusion after {k})", c, heads[2]) for k, c in fused.items()],
        )  # fmt: skip
        self._set_residual(global_residual, in_channels, out_channels)
        self.config = knobs.config(prompt_dims=[p1, p2, p3])
        self._build_unet(knobs, latent_out=dim * 4, decoder3_out=dim * 4)
        s1, s2, s3 = (int(s) for s in prompt_sizes)
        n = int(prompt_len)

        def fusion(width: int) -> TransformerBlock:
            return TransformerBlock(width, heads[2], ffn_expansion_factor, bias, layernorm_type)

        self.prompt1 = PromptGenBlock(p1, n, s1, lin_dim=dim * 2)
        self.prompt2 = PromptGenBlock(p2, n, s2, lin_dim=dim * 4)
        self.prompt3 = PromptGenBlock(p3, n, s3, lin_dim=dim * 8)
        self.noise_level3 = fusion(fused["prompt3"])
        self.reduce_noise_level3 = nn.Conv2d(fused["prompt3"], dim * 4, 1, bias=bias)
        self.noise_level2 = fusion(fused["prompt2"])
        self.reduce_noise_level2 = nn.Conv2d(fused["prompt2"], dim * 4, 1, bias=bias)
        self.noise_level1 = fusion(fused["prompt1"])
        self.reduce_noise_level1 = nn.Conv2d(fused["prompt1"], dim * 2, 1, bias=bias)
        self._finish(grad_checkpointing, weights)

    def _after_latent(self, x: torch.Tensor) -> torch.Tensor:
        x = self.noise_level3(torch.cat([x, self.prompt3(x)], 1))
        return self.reduce_noise_level3(x)

    def _after_decoder3(self, x: torch.Tensor) -> torch.Tensor:
        x = self.noise_level2(torch.cat([x, self.prompt2(x)], 1))
        return self.reduce_noise_level2(x)

    def _after_decoder2(self, x: torch.Tensor) -> torch.Tensor:
        x = self.noise_level1(torch.cat([x, self.prompt1(x)], 1))
        return self.reduce_noise_level1(x)
