"""MoCE-IR (Zamfir et al., CVPR 2025), the official all-in-one model, official names.

A 4-level U-Net: Restormer blocks in the encoder, latent and refinement (with
biases); in the decoder, blocks whose attention is split into a shared branch
and a mixture of complexity experts (:mod:`restorekit.bodies.moce_blocks`) routed
per image from the latent's frequency embedding. Unlike Restormer, decoder level
1 and the refinement work at ``dim`` channels. The two released sizes are
``moce_ir`` (dim 48, 25,353,796 parameters) and ``moce_ir_s`` (dim 32,
11,477,752), as ``--model MoCE_IR`` / ``MoCE_IR_S`` in the official repository;
the released Lightning checkpoints load as they are.

After a training forward, ``aux_loss`` holds the routing balance loss times
``balance_loss_weight`` (the official ``--balance_loss_weight``, 0.01); the engine
adds it to the training loss whatever the recipe's loss (it collects every
module's ``aux_loss``). It is None at inference or when the weight is 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from restorekit.bodies.base import Inject, UNetBody, check_layout
from restorekit.bodies.blocks import (
    BlockStack,
    Downsample,
    GatedFFN,
    LayerNorm2d,
    OverlapPatchEmbed,
    TransposedAttention,
    Upsample,
)
from restorekit.bodies.cross_attention import ChannelCrossAttention
from restorekit.bodies.moce_blocks import RANK_TYPES, AdapterLayer, FrequencyEmbedding, reversed_heads
from restorekit.bodies.points import InjectionPoint
from restorekit.errors import BuildError

COMPLEXITY_SCALES = ("max", "min", "none")


class EncoderBlock(nn.Module):
    """A Restormer block under MoCE-IR's names (``norms.0``, ``mixer``, ``norms.1``, ``ffn``)."""

    def __init__(self, dim: int, heads: int, ffn_expansion_factor: float, bias: bool, layernorm_type: str) -> None:
        super().__init__()
        self.norms = nn.ModuleList([LayerNorm2d(dim, layernorm_type), LayerNorm2d(dim, layernorm_type)])
        self.mixer = TransposedAttention(dim, heads, bias)
        self.ffn = GatedFFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norms[0](x))
        return x + self.ffn(self.norms[1](x))


class EncoderResidualGroup(nn.Module):
    """``num_blocks`` encoder blocks (keys ``layers.<i>.``); checkpointable as a BlockStack."""

    def __init__(self, dim: int, heads: int, num_blocks: int, ffn_expansion_factor: float, layernorm_type: str) -> None:
        super().__init__()
        # The official groups always build their blocks with biases, whatever ``bias`` says.
        self.layers = BlockStack(
            *(EncoderBlock(dim, heads, ffn_expansion_factor, True, layernorm_type) for _ in range(num_blocks))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    """Shared attention branch and expert branch, crossed, then the gated FFN.

    ``x + mixer(adapter(proj1(LN(x)), freq, s), s)`` with ``s = shared(proj0(LN(x)))``.
    """

    def __init__(
        self, dim: int, heads: int, ffn_expansion_factor: float, bias: bool, layernorm_type: str, adapter: AdapterLayer
    ) -> None:
        super().__init__()
        self.norms = nn.ModuleList([LayerNorm2d(dim, layernorm_type), LayerNorm2d(dim, layernorm_type)])
        self.proj = nn.ModuleList([nn.Conv2d(dim, dim, kernel_size=1), nn.Conv2d(dim, dim, kernel_size=1)])
        self.shared = TransposedAttention(dim, heads, bias)
        self.mixer = ChannelCrossAttention(dim, heads, bias, kv_kernel=7)
        self.ffn = GatedFFN(dim, ffn_expansion_factor, bias)
        self.adapter = adapter

    def forward(self, x: torch.Tensor, freq_emb: torch.Tensor) -> torch.Tensor:
        normed = self.norms[0](x)
        shared = self.shared(self.proj[0](normed))
        expert = self.adapter(self.proj[1](normed), freq_emb, shared)
        x = x + self.mixer(expert, shared)
        return x + self.ffn(self.norms[1](x))


class DecoderResidualGroup(nn.Module):
    """Decoder blocks in a row (keys ``layers.<i>.``); ``grad_checkpointing`` recomputes each."""

    grad_checkpointing: bool = False

    def __init__(self, blocks: Sequence[DecoderBlock]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, freq_emb: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, freq_emb, use_reentrant=False)  # the RNG state is replayed
            else:
                x = block(x, freq_emb)
        return x

    def balance_losses(self) -> list[torch.Tensor]:
        return [b.adapter.loss for b in self.layers if b.adapter.loss is not None]


def check_knobs(
    *, dim: int, num_blocks: Sequence[int], num_dec_blocks: Sequence[int], heads: Sequence[int],
    layernorm_type: str, num_experts: int, top_k: int, rank_type: str, complexity_scale: str,
) -> None:  # fmt: skip
    """Raise :class:`BuildError` naming the knob when MoCE-IR cannot build with it."""
    check_layout("moce_ir", dim, num_blocks, heads, layernorm_type, [("heads[0] (refinement)", dim, heads[0])])
    if len(num_dec_blocks) != 3 or any(int(n) < 1 for n in num_dec_blocks):
        raise BuildError(f"moce_ir: num_dec_blocks must be 3 positive counts, got {list(num_dec_blocks)}")
    if int(num_experts) < 1 or not 1 <= int(top_k) <= int(num_experts):
        raise BuildError(f"moce_ir: need num_experts >= 1 and 1 <= top_k <= num_experts, got {num_experts}, {top_k}")
    if rank_type not in RANK_TYPES:
        raise BuildError(f"moce_ir: rank_type must be one of {', '.join(RANK_TYPES)}, got {rank_type!r}")
    if rank_type == "spread" and dim < 2 ** (int(num_experts) - 1):
        raise BuildError(f"moce_ir: rank_type 'spread' needs dim >= 2**(num_experts-1), got dim {dim}")
    if complexity_scale not in COMPLEXITY_SCALES:
        raise BuildError(f"moce_ir: complexity_scale must be one of {', '.join(COMPLEXITY_SCALES)}")


class MoCEIR(UNetBody):
    """MoCE-IR body and baseline model (the official ``MoCEIR`` at the repository's defaults).

    ``dim`` defaults to 48 (32 for ``moce_ir_s``). Knobs keep the official
    meanings: ``num_dec_blocks`` (decoder levels 1, 2, 3, like ``num_blocks``),
    ``rank``/``rank_type`` (expert widths; ``spread`` gives dim/8 .. dim),
    ``num_experts``, ``top_k``, ``with_complexity`` and ``complexity_scale`` (the
    importance term of the balance loss weighted by relative expert size; off in
    the released recipes). ``routing_noise_at_eval`` keeps the official inference,
    which adds the router's training noise (std ``1/num_experts``) and so depends on
    the random state; off, inference routes deterministically. The official
    ``depth_type`` and ``stage_depth`` do not change the network (see
    :class:`~restorekit.bodies.moce_blocks.ModExpert`). Injection points: ``latent``
    (before the frequency embedding, so guidance reaches the router),
    ``decoder3``, ``decoder2``, ``decoder1`` (after those decoder levels).
    """

    architecture = "moce_ir"
    default_dim = 48

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int | None = None,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_dec_blocks: Sequence[int] = (2, 4, 4),
        heads: Sequence[int] = (1, 2, 4, 8),
        num_refinement_blocks: int = 4,
        ffn_expansion_factor: float = 2.0,
        bias: bool = False,
        layernorm_type: str = "WithBias",
        rank: int = 2,
        num_experts: int = 4,
        top_k: int = 1,
        rank_type: str = "spread",
        with_complexity: bool = False,
        complexity_scale: str = "max",
        balance_loss_weight: float = 0.01,
        routing_noise_at_eval: bool = True,
        global_residual: bool = True,
        grad_checkpointing: bool = False,
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        dim = self.default_dim if dim is None else int(dim)
        check_knobs(dim=dim, num_blocks=num_blocks, num_dec_blocks=num_dec_blocks, heads=heads,
                    layernorm_type=layernorm_type, num_experts=num_experts, top_k=top_k, rank_type=rank_type,
                    complexity_scale=complexity_scale)  # fmt: skip
        self._set_residual(global_residual, in_channels, out_channels)
        self.balance_loss_weight = float(balance_loss_weight)
        self.num_dec_blocks = [int(n) for n in num_dec_blocks]
        self.config = dict(dim=dim, num_blocks=list(num_blocks), num_dec_blocks=self.num_dec_blocks,
                           heads=list(heads), num_experts=num_experts, top_k=top_k)  # fmt: skip
        dims = [dim * 2**i for i in range(4)]
        self.patch_embed = OverlapPatchEmbed(in_channels, dim)
        self.freq_embed = FrequencyEmbedding(dims[-1])

        def group(level: int, depth: int) -> EncoderResidualGroup:
            return EncoderResidualGroup(
                dims[level], int(heads[level]), int(depth), ffn_expansion_factor, layernorm_type
            )

        self.enc = nn.ModuleList(nn.ModuleList([group(i, num_blocks[i]), Downsample(dims[i])]) for i in range(3))
        self.latent = group(3, num_blocks[3])
        experts = dict(rank=rank, num_experts=num_experts, top_k=top_k, freq_dim=dims[-1], rank_type=rank_type,
                       with_complexity=with_complexity, complexity_scale=complexity_scale,
                       noise_at_eval=routing_noise_at_eval)  # fmt: skip
        self.dec = self._decoder_levels(dims, heads, ffn_expansion_factor, bias, layernorm_type, experts)
        self.refinement = group(0, num_refinement_blocks)
        self.output = nn.Conv2d(dim, out_channels, kernel_size=3, padding=1, bias=bias)
        self.aux_loss: torch.Tensor | None = None
        points = {"latent": (3, 8), "decoder3": (2, 4), "decoder2": (1, 2), "decoder1": (0, 1)}
        self._set_points({name: InjectionPoint(dims[level], stride) for name, (level, stride) in points.items()})
        self._finish(grad_checkpointing, weights)

    def _decoder_levels(
        self, dims: list[int], heads: Sequence[int], ffn_expansion_factor: float, bias: bool, layernorm_type: str,
        experts: dict,
    ) -> nn.ModuleList:  # fmt: skip
        """``dec.<i>`` for levels 3, 2, 1: upsample, 1x1 fusion with the skip, decoder blocks."""
        levels = []
        for level, n_heads, depth in zip((2, 1, 0), reversed_heads(heads), self.num_dec_blocks[::-1]):
            width = dims[level]
            blocks = [DecoderBlock(width, n_heads, ffn_expansion_factor, bias, layernorm_type,
                                   AdapterLayer(width, **experts)) for _ in range(depth)]  # fmt: skip
            fuse = nn.Conv2d(dims[level + 1], width, 1, bias=bias)
            levels.append(nn.ModuleList([Upsample(dims[level + 1]), fuse, DecoderResidualGroup(blocks)]))
        return nn.ModuleList(levels)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        for _, _, block in self.dec:
            block.grad_checkpointing = bool(enable)

    def _encode_padded(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.patch_embed(x)
        out = {}
        for i, (block, down) in enumerate(self.enc):
            out[f"level{i + 1}"] = feats = block(feats)
            feats = down(feats)
        out["level4"] = self.latent(feats)
        return out

    def _forward_padded(self, x: torch.Tensor, inject: Inject) -> torch.Tensor:
        levels = self._encode_padded(x)
        feats = inject("latent", levels["level4"])
        freq_emb = self.freq_embed(feats)
        for (up, fuse, block), skip, point in zip(self.dec, ("level3", "level2", "level1"),
                                                  ("decoder3", "decoder2", "decoder1")):  # fmt: skip
            feats = block(fuse(torch.cat([up(feats), levels[skip]], dim=1)), freq_emb)
            feats = inject(point, feats)
        self.aux_loss = self._balance_loss()
        out = self.output(self.refinement(feats))
        return out + x if self.global_residual else out

    def _balance_loss(self) -> torch.Tensor | None:
        """The official ``total_loss`` (mean over decoder blocks) times ``balance_loss_weight``."""
        losses = [loss for _, _, block in self.dec for loss in block.balance_losses()]
        if not (self.training and losses and self.balance_loss_weight > 0):
            return None
        return self.balance_loss_weight * torch.stack(losses).sum() / sum(self.num_dec_blocks)


class MoCEIRS(MoCEIR):
    """MoCE-IR-S: the official small size (``--model MoCE_IR_S``), dim 32; every knob as ``moce_ir``."""

    architecture = "moce_ir_s"
    default_dim = 32
