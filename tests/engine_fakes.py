"""Small parts for the engine tests: a local conv net, a NaN-injecting loss, a data stream.

The stream keeps the data contract (``batches(start_step)``; the batch of step s
depends only on seed, s, rank and world size; each rank takes its slice of the
global batch), so the engine is tested against the contract, not one dataset.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from restorekit.backbones.guide import GuidePass
from restorekit.contracts import ModelAux
from restorekit.engine.callbacks import Callback, StepEvent
from restorekit.registry import CALLBACKS, LOSSES, MODELS


class FrozenGuide(nn.Module):
    """A stand-in for a frozen backbone: no trainable weights, recorded, not checkpointed."""

    frozen = True

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 3, 1)
        self.requires_grad_(False)

    def weights_record(self) -> dict[str, Any]:
        return {"name": "fake_guide", "weights": None, "sha256": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class LocalConvNet(nn.Module):
    """Three 3x3 convs (receptive-field radius 3) with a residual; deterministic on CPU.

    ``noise > 0``: in training, the input gets noise drawn from the global python,
    numpy and torch generators (as dropout or an augmentation inside a model would
    draw), so a resume that does not restore them diverges. Rank r of a process group
    draws r values more, so the ranks' generator states differ.
    """

    def __init__(self, width: int = 8, frozen_guide: bool = False, noise: float = 0.0) -> None:
        super().__init__()
        self.noise = noise
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 3, 3, padding=1),
        )
        self.guide = FrozenGuide() if frozen_guide else None

    def global_noise(self, like: torch.Tensor) -> torch.Tensor:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        draws = [random.random() + float(np.random.rand()) + float(torch.rand(())) for _ in range(rank + 1)]
        return self.noise * (torch.randn_like(like) + draws[-1])

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        inp = lq if self.guide is None else lq + 0.1 * self.guide(lq)
        if self.noise and self.training:
            inp = inp + self.global_noise(inp)
        return lq + self.body(inp)


class GuidedConvNet(LocalConvNet):
    """The conv net as a :class:`~restorekit.contracts.GuidedModel`: its guide is the backbone."""

    def __init__(self, width: int = 8) -> None:
        super().__init__(width, frozen_guide=True)
        self.backbone = self.guide
        self.guide_pass = GuidePass(grid="native", rule="global")
        self.calls_with_aux = 0

    def request_backbone_layers(self, layers: Any) -> None:
        pass

    def forward(self, lq: torch.Tensor, return_aux: bool = False) -> Any:  # type: ignore[override]
        out = super().forward(lq)
        if not return_aux:
            return out
        self.calls_with_aux += 1
        return out, ModelAux(backbone=self.backbone, guide=self.backbone(lq))


class DepthwiseNet(nn.Module):
    """A 1x1 conv, a depthwise 3x3 conv on a channels-last activation (as a token grid reshaped
    to an image is), a 1x1 conv back: the depthwise weight's gradient comes with channels-last
    strides, the layout DDP warned about."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, width, 1)
        self.depthwise = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.out = nn.Conv2d(width, 3, 1)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        hidden = self.inp(lq).contiguous(memory_format=torch.channels_last)
        return lq + self.out(self.depthwise(hidden))


def convnet(width: int = 8, aux: bool = False, frozen_guide: bool = False, noise: float = 0.0) -> nn.Module:
    """``engine_test_convnet``: plain, with a frozen part, or guided (``aux``: hands the loss a ModelAux)."""
    return GuidedConvNet(width) if aux else LocalConvNet(width, frozen_guide, noise)


class _InfiniteGradient(torch.autograd.Function):
    """Identity forward; an infinite gradient backward (what an fp16 overflow leaves)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


class NaNAtSteps(nn.Module):
    """L1 loss that returns NaN on the calls listed in ``nan_calls`` (0-based call count), and
    a finite loss whose gradient is infinite on the calls in ``inf_grad_calls``."""

    def __init__(self, nan_calls: list[int] = (), inf_grad_calls: list[int] = ()) -> None:  # type: ignore[assignment]
        super().__init__()
        self.nan_calls, self.inf_grad_calls = set(nan_calls), set(inf_grad_calls)
        self.calls = 0
        self.saw_aux: list[Any] = []

    def forward(self, restored: torch.Tensor, target: torch.Tensor, *, lq: Any = None, aux: Any = None) -> torch.Tensor:
        self.saw_aux.append(aux)
        loss = (restored - target).abs().mean()
        if self.calls in self.nan_calls:
            loss = loss * float("nan")
        if self.calls in self.inf_grad_calls:
            loss = _InfiniteGradient.apply(loss)
        self.calls += 1
        return loss


class StopOnLastRank(Callback):
    """``engine_test_stop_on_last_rank``: asks to stop at ``step`` on the last rank of a process
    group only (a callback whose decision the other ranks never see)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, loop: Any, event: StepEvent) -> None:
        last = not torch.distributed.is_initialized() or (
            torch.distributed.get_rank() == torch.distributed.get_world_size() - 1
        )
        if event.step == self.step and last:
            loop.request_stop(f"asked on the last rank at step {self.step}")


def register() -> None:
    """Register the fakes (idempotent) under names tests use in recipes."""
    MODELS.register("engine_test_convnet", convnet, replace=True)
    MODELS.register("engine_test_depthwise", DepthwiseNet, replace=True)
    CALLBACKS.register("engine_test_stop_on_last_rank", StopOnLastRank, replace=True)
    LOSSES.register("engine_test_nan", NaNAtSteps, replace=True)


def make_pair(gen: torch.Generator, size: int, sigma: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image and a noisy copy."""
    coarse = torch.rand(3, size // 4, size // 4, generator=gen)
    gt = torch.nn.functional.interpolate(coarse[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    lq = (gt + sigma * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    return lq, gt


class FakeStream:
    """Per-rank ``batch_size`` as ``build_train_stream``; the global batch of step s comes
    from seed (seed, s) and rank r takes rows [r*b, (r+1)*b)."""

    def __init__(self, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, patch: int = 16) -> None:
        self.per_rank, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.patch = patch

    def batches(self, start_step: int = 0) -> Iterator[dict[str, Any]]:
        step = start_step
        per_rank = self.per_rank
        while True:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            pairs = [make_pair(gen, self.patch) for _ in range(per_rank * self.world)]
            rows = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
            lq = torch.stack([p[0] for p in pairs])[rows]
            gt = torch.stack([p[1] for p in pairs])[rows]
            yield {"lq": lq, "gt": gt, "task": ["noise"] * per_rank}
            step += 1


class FakeEvalSet(torch.utils.data.Dataset):
    """Full-size noisy/clean pairs, fixed by ``seed``."""

    def __init__(self, count: int = 2, size: int = 24, seed: int = 7, task: str = "noise") -> None:
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(count):
            lq, gt = make_pair(gen, size)
            self.items.append({"lq": lq, "gt": gt, "task": task, "name": f"img{i}"})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


class Interrupted(Exception):
    """Raised by :func:`run_until` in place of the step it stops at."""


def run_until(trainer: Any, step: int) -> None:
    """Run ``trainer`` and stop it, as a crash would, when it reaches ``step``."""
    original = trainer.train_step

    def stop(batch: Any, at: int) -> Any:
        if at == step:
            raise Interrupted
        return original(batch, at)

    trainer.train_step = stop
    try:
        trainer.run()
    except Interrupted:
        return
    raise AssertionError(f"the run ended before step {step}")
