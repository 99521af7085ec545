"""The infinite, task-balanced training stream of random patches.

Sample ``j`` of the global batch at step ``s`` is a pure function of
``(seed, s, j)``: its own generator picks the task (by share), the image, the
crop, one of the 8 flips/rotations and the seed of an on-the-fly degradation.
Rank ``r`` of ``world_size`` takes samples ``r*B .. (r+1)*B - 1``, so the global
batch is the same for any number of processes, DataLoader workers change
nothing, and resuming at step ``s`` replays exactly what an uninterrupted run
would have seen.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from restorekit.data.datasets import as_float
from restorekit.data.seeding import derive_seed, draw_seed
from restorekit.errors import DataError

__all__ = ["TaskSource", "TrainStream", "random_crop", "augment_op"]


@dataclass
class TaskSource:
    """One task of the mix: its label, its dataset and its (unnormalised) share."""

    name: str
    dataset: Any
    share: float


def pad_to(img: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (reflect where possible) so both sides are at least ``size``."""
    ph, pw = max(0, size - img.shape[-2]), max(0, size - img.shape[-1])
    if not ph and not pw:
        return img
    mode = "reflect" if ph < img.shape[-2] and pw < img.shape[-1] else "replicate"
    return F.pad(as_float(img)[None], (0, pw, 0, ph), mode=mode)[0]


def random_crop(images: Sequence[torch.Tensor | None], size: int, gen: torch.Generator) -> list[torch.Tensor | None]:
    """The same random ``size`` x ``size`` window of each image (padded first if smaller)."""
    present = [pad_to(x, size) if x is not None else None for x in images]
    ref = next(x for x in present if x is not None)
    top = int(torch.randint(ref.shape[-2] - size + 1, (), generator=gen))
    left = int(torch.randint(ref.shape[-1] - size + 1, (), generator=gen))
    return [x[..., top : top + size, left : left + size] if x is not None else None for x in present]


def augment_op(img: torch.Tensor, op: int) -> torch.Tensor:
    """One of the 8 symmetries of the square: ``op % 4`` quarter turns, flipped if ``op >= 4``."""
    out = torch.rot90(img, op % 4, dims=(-2, -1)) if op % 4 else img
    return out.flip(-1) if op >= 4 else out


def _load(dataset: Any, index: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(lq or None, gt): ``load`` for restorekit datasets, else the item's lq and gt."""
    if hasattr(dataset, "load"):
        return dataset.load(index)
    item = dataset[index]
    return item["lq"], item["gt"]


class TrainStream:
    """Deterministic batches of random patches from several tasks (see module doc)."""

    def __init__(
        self,
        tasks: Sequence[TaskSource],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        patch_size: int = 128,
        augment: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch: int = 2,
    ) -> None:
        if not tasks:
            raise DataError("the training stream has no task")
        if batch_size < 1 or patch_size < 1 or num_workers < 0:
            raise DataError(
                f"bad stream settings: batch_size={batch_size}, patch_size={patch_size}, num_workers={num_workers}"
            )
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world_size {world_size}")
        for task in tasks:
            if len(task.dataset) == 0:
                raise DataError(f"task {task.name!r} has no images")
            if not task.share > 0:
                raise DataError(f"task {task.name!r} has share {task.share}; it must be > 0")
        self.tasks = list(tasks)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.patch_size, self.augment = patch_size, augment
        self.num_workers, self.pin_memory, self.prefetch = num_workers, pin_memory, prefetch
        total = sum(t.share for t in self.tasks)
        self.probabilities = {t.name: t.share / total for t in self.tasks}
        self._cumulative = list(itertools.accumulate(t.share / total for t in self.tasks))
        self._cumulative[-1] = 1.0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def choose_task(self, gen: torch.Generator) -> TaskSource:
        u = float(torch.rand((), generator=gen))
        return self.tasks[min(bisect.bisect_right(self._cumulative, u), len(self.tasks) - 1)]

    def sample(self, step: int, index: int) -> dict[str, Any]:
        """Sample ``index`` of the global batch at ``step``: a pure function of (seed, step, index)."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, step, index))
        task = self.choose_task(gen)
        image = int(torch.randint(len(task.dataset), (), generator=gen))
        op = int(torch.randint(8, (), generator=gen)) if self.augment else 0
        degrade_seed = draw_seed(gen)
        lq, gt = _load(task.dataset, image)
        if lq is not None and lq.shape != gt.shape:
            raise DataError(f"task {task.name!r} image {image}: lq {tuple(lq.shape)} and gt {tuple(gt.shape)} differ")
        lq, gt = random_crop([lq, gt], self.patch_size, gen)
        lq, gt = (as_float(lq) if lq is not None else None), as_float(gt)
        gt = augment_op(gt, op)
        if lq is None:
            lq = task.dataset.degrade(gt, degrade_seed)
        else:
            lq = augment_op(lq, op)
        return {"lq": lq.float().contiguous(), "gt": gt.float().contiguous(), "task": task.name}

    def indices(self, step: int) -> list[tuple[int, int]]:
        """This rank's (step, global index) keys at ``step``."""
        first = self.rank * self.batch_size
        return [(step, first + k) for k in range(self.batch_size)]

    def batch(self, step: int) -> dict[str, Any]:
        """This rank's batch at ``step``, computed in this process."""
        return collate([self.sample(s, j) for s, j in self.indices(step)])

    def batches(self, start_step: int = 0) -> Iterator[dict[str, Any]]:
        """Batches for ``start_step``, ``start_step + 1``, ... forever."""
        if self.num_workers == 0:
            for step in itertools.count(start_step):
                yield self.batch(step)
            return
        loader = torch.utils.data.DataLoader(
            _Samples(self),
            batch_sampler=_StepKeys(self, start_step),
            num_workers=self.num_workers,
            collate_fn=collate,
            worker_init_fn=partial(_seed_worker, derive_seed(self.seed, self.rank)),
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch,
            generator=torch.Generator().manual_seed(derive_seed(self.seed, self.rank, 1)),
        )
        yield from loader


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "lq": torch.stack([s["lq"] for s in samples]),
        "gt": torch.stack([s["gt"] for s in samples]),
        "task": [s["task"] for s in samples],
    }


class _Samples(torch.utils.data.Dataset):
    """Map-style view of the stream keyed by (step, global index), for DataLoader workers."""

    def __init__(self, stream: TrainStream) -> None:
        self.stream = stream

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        return self.stream.sample(*key)


class _StepKeys:
    """The infinite batch sampler: this rank's keys for each step from ``start``."""

    def __init__(self, stream: TrainStream, start: int) -> None:
        self.stream, self.start = stream, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in itertools.count(self.start):
            yield self.stream.indices(step)


def _seed_worker(base_seed: int, worker_id: int) -> None:
    """Per-worker seeding of the global generators (samples carry their own seeds anyway)."""
    seed = derive_seed(base_seed, worker_id)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
