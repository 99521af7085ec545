"""torch.distributed helpers: one process, or N launched by ``torchrun``.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them the loop runs as
a single process with no process group at all. Under torchrun every process joins
the group, one process included (``--nproc_per_node 1`` runs the DDP code path on
one GPU). Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from restorekit.errors import RecipeError, RestorekitError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group: bool = False  # joined a process group (torchrun): collectives and DDP, even for one process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.group or self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's CUDA device when there is one, else the CPU."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RecipeError("train.device is 'cuda' but no CUDA device is available")
    if preference in ("cuda", "auto") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RecipeError(
                f"process with LOCAL_RANK {local_rank} has no GPU of its own: this host shows {count} "
                f"CUDA device(s); start at most {count} process(es) per node (torchrun --nproc_per_node)"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def restart_count() -> int:
    """How many times torchrun's elastic agent restarted this worker group (0 on the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def elastic_resume(resume: str | None) -> str | None:
    """``--resume`` as given, or ``"auto"`` in a worker group torchrun restarted after a failure:
    the restarted workers continue from the run's newest checkpoint by themselves."""
    return "auto" if resume is None and restart_count() > 0 else resume


def launched_by_torchrun() -> bool:
    """Whether a launcher (torchrun) started this process: it sets LOCAL_RANK and WORLD_SIZE."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


STORE_TIMEOUT = timedelta(minutes=30)  # torch's default for a process group


def restart_store(world_size: int) -> dist.Store | None:
    """A store with keys of this attempt only, in a worker group torchrun restarted; else None.

    The agent keeps one store across restarts, the keys of the dead attempt included:
    the new workers could read the old gloo addresses and wait on a dead peer. A
    prefix per attempt gives each restart fresh keys.
    """
    if restart_count() == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    shared = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=STORE_TIMEOUT
    )
    return dist.PrefixStore(f"restorekit/attempt_{restart_count()}", shared)


def init(device_preference: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    world_size = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    group = world_size > 1 or launched_by_torchrun()
    if group and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = restart_store(world_size)
        if store is None:
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        else:
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size, store=store)
    return DistContext(rank, world_size, local_rank, device, group)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity in one process)."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank (``[obj]`` in one process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(ctx: DistContext, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` run on rank 0, its result handed to every rank.

    When it raises (a refused lock, a full disk), rank 0 raises that error and every
    other rank a :class:`RestorekitError` with its message, instead of waiting for a
    result forever.
    """
    if not ctx.distributed:
        return fn(*args)
    outcome: tuple[str, Any] | None = None
    try:
        if ctx.is_main:
            outcome = ("ok", fn(*args))
    except Exception as exc:
        broadcast_object(ctx, ("error", str(exc) if isinstance(exc, RestorekitError) else repr(exc)))
        raise
    kind, value = broadcast_object(ctx, outcome)
    if kind == "error":
        raise RestorekitError(f"rank 0 stopped: {value}")
    return value


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Each rank's share of the global batch; it must divide evenly."""
    if global_batch % world_size:
        raise RecipeError(
            f"train.batch_size ({global_batch}) is the global batch and must be divisible "
            f"by the number of processes ({world_size})"
        )
    return global_batch // world_size
