"""MoCE-IR's complexity experts and their router (Zamfir et al., CVPR 2025), official names.

A decoder block's adapter (:class:`AdapterLayer`) holds ``num_experts`` experts of
growing complexity: expert ``i`` is a low-rank bottleneck (``dim -> rank_i ->
dim``) around a self-attention in the Fourier domain over ``4 * 2**i`` pixel
patches (:class:`FFTAttention`), gated by the block's shared attention branch. A
router picks ``top_k`` experts per image from the feature's global average and
the latent's frequency embedding, with Gaussian noise on the logits (in training
and, as in the official code, at inference), and reports a balance loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from restorekit.bodies.blocks import LayerNorm2d

RANK_TYPES = ("constant", "lin", "double", "exp", "fact", "spread")


def expert_ranks(dim: int, rank: int, num_experts: int, rank_type: str) -> list[int]:
    """Bottleneck width of each expert, by the official ``rank_type`` rule."""
    rules = {
        "constant": lambda i: rank,
        "lin": lambda i: rank + i,
        "double": lambda i: rank + 2 * i,
        "exp": lambda i: rank ** (i + 1),
        "fact": lambda i: math.factorial(rank + i),
        "spread": lambda i: dim // 2 ** (num_experts - 1 - i),  # dim/8, dim/4, dim/2, dim for 4
    }
    if rank_type not in rules:
        raise ValueError(f"rank_type must be one of {', '.join(RANK_TYPES)}, got {rank_type!r}")
    return [rules[rank_type](i) for i in range(num_experts)]


class FFTAttention(nn.Module):
    """Per ``patch_size`` patch, q circularly convolved with k (a product of FFTs), normed, times v.

    The FFTs run in float32 whatever the input dtype, as in the official code.
    """

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=False)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=7, padding=3, groups=dim * 2)
        self.norm = LayerNorm2d(dim, "WithBias")
        self.proj_out = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(x)).chunk(2, dim=1)
        p = self.patch_size
        q, k = (self._patches(t.float()) for t in (q, k))  # (B, C, H/p, p, W/p, p)
        mixed = torch.fft.irfft2(torch.fft.rfft2(q, dim=(3, 5)) * torch.fft.rfft2(k, dim=(3, 5)), s=(p, p), dim=(3, 5))
        b, c, hp, _, wp, _ = mixed.shape
        mixed = mixed.reshape(b, c, hp * p, wp * p)[..., :h, :w]
        return self.proj_out(self.norm(mixed) * v)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = F.pad(x, (0, -x.shape[-1] % p, 0, -x.shape[-2] % p))
        b, c, h, w = x.shape
        return x.view(b, c, h // p, p, w // p, p)


class ModExpert(nn.Module):
    """One complexity expert: ``x + proj2(FFTAttention(proj0(x)) * silu(proj1(shared)))``.

    The official ``depth`` repeats the same computation on the same input and keeps
    the last result, so it changes nothing and is not a knob here.
    """

    def __init__(self, dim: int, rank: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(
            [
                nn.Conv2d(dim, rank, kernel_size=1, bias=False),
                nn.Conv2d(dim, rank, kernel_size=1, bias=False),
                nn.Conv2d(rank, dim, kernel_size=1, bias=False),
            ]
        )
        self.body = FFTAttention(rank, patch_size)

    def forward(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        body = self.body(self.proj[0](x)) * F.silu(self.proj[1](shared))
        return x + self.proj[2](body)


class ExpertSlot(nn.Sequential):
    """The official ``MySequential`` wrapper around one expert (state-dict keys ``experts.<i>.0.``).

    ``sparse_gradients``: the expert runs only on the images that chose it, so in a
    training step with none its parameters get no gradient (as in the official
    training, which runs DDP with ``find_unused_parameters``).
    """

    sparse_gradients = True

    def forward(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, shared)
        return x


class RoutingFunction(nn.Module):
    """Noisy top-k gating from the feature's average and the frequency embedding.

    Returns ``(gates, indices, balance)``: ``gates`` ``(B, E)`` holds the noisy
    softmax score of each chosen expert and zeros elsewhere; ``balance`` (training
    only, else None) is ``0.5 * cv^2(importance) + 0.5 * cv^2(load)`` of the batch,
    the importance optionally scaled by each expert's relative parameter count
    (``complexity``, the official ``with_complexity``).
    """

    def __init__(
        self, dim: int, freq_dim: int, num_experts: int, k: int, complexity: torch.Tensor,
        use_complexity_bias: bool = False, complexity_scale: str = "max", noise_at_eval: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(dim, num_experts, bias=False))
        self.freq_gate = nn.Linear(freq_dim, num_experts, bias=False)
        if complexity_scale == "min":
            complexity = complexity / complexity.min()
        elif complexity_scale == "max":
            complexity = complexity / complexity.max()
        self.register_buffer("complexity", complexity)
        self.k, self.num_experts = k, num_experts
        self.noise_std = 1.0 / num_experts
        self.use_complexity_bias = use_complexity_bias
        self.noise_at_eval = noise_at_eval

    def forward(
        self, x: torch.Tensor, freq_emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        logits = self.gate(x) + self.freq_gate(freq_emb)
        noisy = logits
        if self.training or self.noise_at_eval:
            noisy = logits + torch.randn_like(logits) * self.noise_std
        values, indices = noisy.softmax(dim=-1).topk(self.k, dim=-1)
        gates = torch.zeros_like(logits).scatter(1, indices, values)
        if not self.training:
            return gates, indices, None
        balance = 0.5 * self._importance_loss(logits.softmax(dim=-1)) + 0.5 * self._load_loss(logits, noisy)
        return gates, indices, balance

    def _importance_loss(self, scores: torch.Tensor) -> torch.Tensor:
        importance = scores.sum(dim=0)
        if self.use_complexity_bias:
            importance = importance * self.complexity
        return (importance.std() / (importance.mean() + 1e-8)) ** 2

    def _load_loss(self, logits: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """cv^2 over experts of the probability that each would be chosen under fresh noise."""
        kth = noisy.topk(self.k, dim=-1).indices[:, -1:]
        threshold = noisy.gather(1, kth)
        margin = (threshold - logits) / self.noise_std
        chosen = 1.0 - 0.5 * (1.0 + torch.erf(margin / math.sqrt(2.0)))  # 1 - Normal(0, 1).cdf
        load = chosen.mean(dim=0)
        return (load.std() / (load.mean() + 1e-8)) ** 2


class AdapterLayer(nn.Module):
    """The mixture of complexity experts of one decoder block, then a 1x1 projection.

    After each forward, ``loss`` holds the router's balance loss (None at
    inference) and ``last_indices`` the experts chosen per image ``(B, top_k)``.
    """

    def __init__(
        self, dim: int, rank: int, num_experts: int, top_k: int, freq_dim: int, rank_type: str = "spread",
        with_complexity: bool = False, complexity_scale: str = "max", noise_at_eval: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        ranks = expert_ranks(dim, rank, num_experts, rank_type)
        patch_sizes = [2 ** (i + 2) for i in range(num_experts)]
        self.experts = nn.ModuleList(ExpertSlot(ModExpert(dim, r, p)) for r, p in zip(ranks, patch_sizes))
        self.proj_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        complexity = torch.tensor([sum(p.numel() for p in e.parameters()) for e in self.experts])
        self.routing = RoutingFunction(
            dim, freq_dim, num_experts, top_k, complexity, with_complexity, complexity_scale, noise_at_eval
        )
        self.loss: torch.Tensor | None = None
        self.last_indices: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, freq_emb: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        gates, indices, self.loss = self.routing(x, freq_emb)
        self.last_indices = indices.detach()
        return self.proj_out(self._mix(x, shared, gates, indices))

    def _mix(self, x: torch.Tensor, shared: torch.Tensor, gates: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``sum_e gate_e * expert_e`` per image, each expert run only on the images that chose it."""
        out = torch.zeros_like(x)
        chosen = self._routes(indices)
        for e, expert in enumerate(self.experts):
            rows = [b for b, picks in enumerate(chosen) if e in picks]
            if not rows:
                continue
            if len(rows) == x.shape[0]:
                out = out + gates[:, e, None, None, None].to(x.dtype) * expert(x, shared)
                continue
            where = torch.tensor(rows, device=x.device)
            part = expert(x.index_select(0, where), shared.index_select(0, where))
            out = out.index_add(0, where, gates[where, e, None, None, None].to(x.dtype) * part)
        return out

    def _routes(self, indices: torch.Tensor) -> list[list[int]]:
        """Experts chosen per image; on the meta device (cost counting, no values) the
        ``top_k`` most complex ones, so a counted cost is the upper bound."""
        if indices.is_meta:
            count, k = len(self.experts), indices.shape[1]
            return [list(range(count - k, count))] * indices.shape[0]
        return indices.tolist()


class FrequencyEmbedding(nn.Module):
    """The latent's high frequencies (a trainable Laplacian, GELU), averaged, through an MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        laplacian = nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False, groups=dim)
        with torch.no_grad():
            kernel = torch.full((3, 3), -1.0)
            kernel[1, 1] = 8.0
            laplacian.weight.copy_(kernel.expand(dim, 1, 3, 3))
        self.high_conv = nn.Sequential(HighPass(laplacian), nn.GELU())
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.high_conv(x).mean(dim=(-2, -1)))


class HighPass(nn.Module):
    """Holder of the Laplacian convolution (official key ``high_conv.0.conv``).

    The official code means to freeze it but sets an attribute instead of calling
    ``requires_grad_``, so it trains; so does this one.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def reversed_heads(heads: Sequence[int]) -> list[int]:
    """Heads of decoder levels 3, 2, 1 (the official decoder walks ``heads`` backwards)."""
    return [int(h) for h in heads[::-1][1:]]
