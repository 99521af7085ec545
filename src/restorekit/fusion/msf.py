"""MSF, multi-layer semantic fusion: a gate mixes K expert fusions of the layer maps.

X = concat(F_1..F_L). Expert k: 1x1 conv (L*C -> C_f), GELU, 3x3 depthwise conv,
1x1 conv. Gate: global average pool of X -> MLP (L*C -> hidden -> K) ->
softmax(z / tau), one weight per expert per sample. Output: sum_k g_k E_k(X).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restorekit.fusion.concat import check_layer_maps


class Expert(nn.Module):
    """One expert: pointwise mix of all layers, local depthwise context, pointwise out."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, groups=out_channels)
        self.proj = nn.Conv2d(out_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.dwconv(self.act(self.reduce(x))))


class MultiLayerSemanticFusion(nn.Module):
    """Gated mixture of experts over the concatenated backbone layers.

    Args:
        in_channels: channels of each layer map (the backbone's ``embed_dim``).
        num_layers: number of layer maps L.
        out_channels: C_f, channels of the fused guide.
        num_experts: K.
        top_k: experts kept per sample (``None`` = dense, all K).
        temperature: initial softmax temperature tau.
        learn_temperature: learn tau (kept positive through its log) or keep it fixed.
        gate_hidden: hidden width of the gate MLP (``None`` = ``out_channels``).
        load_balance_weight: weight of the auxiliary loss that pushes the
            batch-mean gate toward uniform; 0 switches it off (``aux_loss`` is None).

    After each forward, ``last_gate`` holds the gate weights ``(B, K)`` (rows sum
    to one; with ``top_k`` exactly ``top_k`` entries per row are nonzero) and
    ``aux_loss`` the load-balance loss or ``None``.
    """

    def __init__(
        self,
        in_channels: int,
        num_layers: int,
        out_channels: int = 384,
        num_experts: int = 4,
        top_k: int | None = None,
        temperature: float = 1.0,
        learn_temperature: bool = True,
        gate_hidden: int | None = None,
        load_balance_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"msf: num_experts must be >= 1, got {num_experts}")
        if top_k is not None and not 1 <= top_k <= num_experts:
            raise ValueError(f"msf: top_k must be in [1, num_experts={num_experts}], got {top_k}")
        if temperature <= 0:
            raise ValueError(f"msf: temperature must be > 0, got {temperature}")
        self.in_channels, self.num_layers, self.out_channels = in_channels, num_layers, out_channels
        self.num_experts = num_experts
        self.top_k = num_experts if top_k is None else top_k
        self.load_balance_weight = load_balance_weight
        joint = in_channels * num_layers
        hidden = gate_hidden or out_channels
        self.experts = nn.ModuleList(Expert(joint, out_channels) for _ in range(num_experts))
        self.gate = nn.Sequential(nn.Linear(joint, hidden), nn.GELU(), nn.Linear(hidden, num_experts))
        log_tau = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau)
        self.last_gate: Tensor | None = None
        self.aux_loss: Tensor | None = None

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def gate_weights(self, x: Tensor) -> Tensor:
        """Softmax gate ``(B, K)`` of the concatenated maps, sparse when ``top_k < K``."""
        logits = self.gate(x.mean(dim=(2, 3))) / self.temperature
        if self.top_k < self.num_experts:
            kept = logits.topk(self.top_k, dim=1).indices
            mask = torch.full_like(logits, float("-inf")).scatter(1, kept, 0.0)
            logits = logits + mask
        return F.softmax(logits.float(), dim=1).to(logits.dtype)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        x = torch.cat(check_layer_maps(feats, self.num_layers, self.in_channels), dim=1)
        gate = self.gate_weights(x)
        if self.top_k < self.num_experts and not torch.is_grad_enabled():
            # At inference an expert no sample selected costs nothing. While training
            # every expert runs (its gate is 0), so DDP sees every parameter used.
            active = (gate > 0).any(dim=0).tolist()
        else:
            active = [True] * self.num_experts
        out = None
        for k, expert in enumerate(self.experts):
            if not active[k]:
                continue
            term = gate[:, k, None, None, None] * expert(x)
            out = term if out is None else out + term
        self.last_gate = gate.detach()
        self.aux_loss = self._load_balance(gate) if self.load_balance_weight > 0 else None
        assert out is not None  # every gate row sums to one, so some expert is active
        return out

    def _load_balance(self, gate: Tensor) -> Tensor:
        """``K * sum_k mean_b(g_bk)^2 - 1``: zero when experts share the batch evenly."""
        importance = gate.float().mean(dim=0)
        return self.load_balance_weight * (self.num_experts * importance.pow(2).sum() - 1.0)
