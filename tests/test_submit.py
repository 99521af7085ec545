"""restorekit submit: the submitit job (through submitit's local executor), its ranks, and the
pre-emption decision: a scheduler's signal after the checkpoint goes on to submitit's requeue."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml

from restorekit.cli import main
from restorekit.commands.submit_job import hand_over, master_port, preemption_signal, rank_environment
from restorekit.engine import checkpoint as ckpt
from restorekit.engine.signals import STOP_SIGNALS, requeue_wanted
from restorekit.errors import TrainingInterrupted


def test_a_scheduler_signal_is_requeued_and_a_person_s_ctrl_c_is_not() -> None:
    assert [requeue_wanted(sig) for sig in STOP_SIGNALS] == [True, False, True, True]  # TERM INT USR1 USR2
    assert preemption_signal() == signal.SIGUSR2  # submitit's default
    heard: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: heard.append(signum))
    try:
        for stop in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGUSR2):
            hand_over(TrainingInterrupted("stopped", stop))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert heard == [signal.SIGUSR2] * 3  # TERM, USR1 and USR2 reach submitit's handler; INT does not


def test_each_task_gets_the_environment_torchrun_would_give() -> None:
    assert rank_environment(0, 0, 1, ["n1"], "77") == {}  # one task: no process group
    assert master_port("12345") == 20000 + 12345 % 20000 == 32345
    assert master_port("4_2") == 20042  # an array task: the same port on every node of the job
    assert rank_environment(3, 1, 4, ["n1", "n2"], "12345") == {
        "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "n1", "MASTER_PORT": "32345",
    }  # fmt: skip


def test_bad_submit_arguments_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "demo/restormer_tiny", "--local", "--nodes", "2"]) == 2
    assert "--local runs on this machine: one node, not --nodes 2" in capsys.readouterr().err
    assert main(["submit", "demo/restormer_tiny", "--local", "--time", "0"]) == 2
    assert "--time must be >= 1, got 0" in capsys.readouterr().err
    assert main(["submit", "demo/restormer_tiny", "--local", "--gpus-per-node", "-1"]) == 2
    assert "--gpus-per-node must be >= 0, got -1" in capsys.readouterr().err


def test_a_submitted_job_trains_through_submitit_s_local_executor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = {
        "name": "submit-test",
        "model": {"type": "restormer", "dim": 8, "num_blocks": [1, 1, 1, 1], "heads": [1, 1, 1, 1],
                  "num_refinement_blocks": 1},
        "loss": {"type": "l1"},
        "data": {"patch_size": 16, "num_workers": 0, "train": {"noise": {"dataset": {
            "type": "samples", "split": "train", "degradation": {"type": "noise", "sigma": 25}, "max_size": 64}}}},
        "train": {"iterations": 2, "batch_size": 2, "val_every": 0, "ckpt_every": 2, "device": "cpu", "threads": 1,
                  "progress": False, "out_dir": str(tmp_path / "run")},
        "eval": {"after_train": False},
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code = main(["submit", str(path), "--local", "--gpus-per-node", "0", "--folder", str(tmp_path / "jobs"), "--wait"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(1 node(s) x 1 process(es))" in out and f"done: step 2, run folder {tmp_path / 'run'}" in out
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2]
    assert list((tmp_path / "jobs").glob("*_result.pkl"))  # submitit ran it as its job


def test_a_bad_recipe_is_refused_before_anything_is_queued(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: {type: restormer}\ntrain: {iterations: -3}\n")
    assert main(["submit", str(path), "--local", "--folder", str(tmp_path / "jobs")]) == 2
    assert "train.iterations" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists()
