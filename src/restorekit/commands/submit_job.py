"""The job ``restorekit submit`` hands to submitit: one training process per task, requeued on pre-emption.

submitit starts ``tasks_per_node`` processes on each node (one per GPU); each learns
its rank from :class:`submitit.JobEnvironment` and joins the process group as it
would under torchrun. Every start trains with ``--resume auto``, so a requeued job
goes on from its newest checkpoint. Before the time limit (or on a pre-emption)
SLURM sends submitit's signal (SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` names
another): the training loop finishes its step and writes a checkpoint, then the
signal goes on to submitit's own handler, which on global rank 0 calls
:meth:`TrainJob.checkpoint` (the same job again) and requeues it.

Needs the optional extra: ``pip install 'restorekit[submitit]'``.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Any

import submitit

from restorekit.engine.signals import requeue_wanted
from restorekit.engine.train import train
from restorekit.errors import TrainingInterrupted
from restorekit.recipes import load_recipe

PORT_BASE, PORT_SPAN = 20000, 20000  # the process group's port, from the job id: every node computes the same


def master_port(job_id: str) -> int:
    digits = re.sub(r"\D", "", job_id) or "0"
    return PORT_BASE + int(digits) % PORT_SPAN


def rank_environment(rank: int, local_rank: int, world_size: int, hosts: list[str], job_id: str) -> dict[str, str]:
    """What torchrun would have set for this task (nothing for a one-task job: no process group)."""
    if world_size == 1:
        return {}
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": hosts[0],
        "MASTER_PORT": str(master_port(job_id)),
    }


def preemption_signal() -> int:
    """The signal submitit's handler checkpoints and requeues on."""
    return int(getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG))


def hand_over(stop: TrainingInterrupted) -> None:
    """After the loop stopped on ``stop.signum`` with its checkpoint: a scheduler's signal goes
    on to submitit's handler (which requeues on global rank 0); a person's Ctrl-C does not."""
    if requeue_wanted(stop.signum):
        signal.raise_signal(preemption_signal())


class TrainJob(submitit.helpers.Checkpointable):
    """Train ``recipe`` (a name or a path, with ``overrides``) on the job's tasks; the same job is
    what a requeue runs again (:meth:`checkpoint` from submitit's Checkpointable)."""

    def __init__(self, recipe: str, overrides: list[str]) -> None:
        self.recipe, self.overrides = recipe, list(overrides)

    def __call__(self) -> dict[str, Any]:
        job = submitit.JobEnvironment()
        os.environ.update(
            rank_environment(job.global_rank, job.local_rank, job.num_tasks, list(job.hostnames), str(job.job_id))
        )
        recipe = load_recipe(self.recipe, self.overrides)
        try:
            result = train(recipe, source=self.recipe, resume="auto")
        except TrainingInterrupted as stop:
            hand_over(stop)
            raise
        return {"run_dir": str(result.run_dir), "step": result.step}
