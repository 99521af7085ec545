"""Beyond one torchrun agent (gloo on the CPU): two agents as two nodes, an elastic restart after kill -9.

tests/multinode_driver.py trains the engine fakes. Two agents on this machine
rendezvous over c10d on 127.0.0.1 as two nodes of one process each (they share this
filesystem, as nodes share a cluster's): the run must match one process, every
sample of each global batch must be trained on exactly once, global rank 0 alone
must lock, log and checkpoint, ``--resume auto`` must work on every node, a SIGTERM
to one node's worker must stop both at one step with one checkpoint, and the
step must cost one all-reduce with no DDP grad-stride warning. One agent with
``--max-restarts 1`` whose worker is killed must restart the group and go on from
the last checkpoint by itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import engine_fakes
import multinode_driver as driver
import pytest
import torch

from restorekit.engine import checkpoint as ckpt
from restorekit.engine.train import train

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "multinode_driver.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RESTOREKIT_DISABLE_PLUGINS": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agents(*commands: list[str], timeout: float = 240) -> list[tuple[int, str]]:
    """Run torchrun agents side by side; (exit status, output) of each. On a timeout every
    agent's session (its workers too) is killed, so no orphan outlives the test."""
    started = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                         start_new_session=True)
        for command in commands
    ]  # fmt: skip
    try:
        outputs = [agent.communicate(timeout=timeout)[0] for agent in started]
        return [(agent.returncode, text) for agent, text in zip(started, outputs)]
    finally:
        for agent in started:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()


def seen(out: Path, phase: str, attempt: int = 0) -> dict[int, dict]:
    """What each rank of ``phase`` recorded, by global rank."""
    records = [json.loads(p.read_text()) for p in out.glob(f"{phase}-rank*-attempt{attempt}.json")]
    return {r["rank"]: r for r in records}


def final(run_dir: Path) -> ckpt.Checkpoint:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir)[-1][1])


def step_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "event" not in r]


def assert_matches_one_process(run_dir: Path, reference: Path) -> None:
    a, b = final(reference), final(run_dir)
    assert a.step == b.step == driver.ITERATIONS
    for part in ("model", "ema"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.keys() == y.keys()
        worst = max(float((x[k] - y[k]).abs().max()) for k in x)
        assert worst <= 1e-6, (part, worst)
    losses = [[r["loss"] for r in step_lines(run)] for run in (reference, run_dir)]
    assert len(losses[1]) == driver.ITERATIONS  # each step logged once, by one writer
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run in one process, uninterrupted."""
    engine_fakes.register()
    out = tmp_path_factory.mktemp("one") / "run"
    train(driver.recipe(out), stream=engine_fakes.FakeStream(driver.GLOBAL_BATCH))
    return out


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Two torchrun agents, one process each, as two nodes; (OUT, each agent's output)."""
    out = tmp_path_factory.mktemp("two_nodes")
    node = [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "multinode-test", "--max-restarts", "0",
            str(DRIVER), str(out), "resumed", "count", "request", "signal"]  # fmt: skip
    results = agents(node, node)
    for code, text in results:
        assert code == 0, text[-4000:]
    return out, [text for _, text in results]


def test_two_nodes_match_one_process_and_resume_on_every_node(two_nodes, reference) -> None:
    out, _ = two_nodes
    ranks = seen(out, "resumed")
    assert sorted(ranks) == [0, 1] and sorted(r["node"] for r in ranks.values()) == [0, 1]  # two nodes
    assert all(r["step"] == driver.ITERATIONS for r in ranks.values())  # --resume auto on every node
    run_dir = out / "resumed"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["resumed_from"].endswith("ckpt-00000005")
    assert_matches_one_process(run_dir, reference)


def test_every_sample_of_each_global_batch_is_trained_on_once_across_nodes(two_nodes) -> None:
    out, _ = two_nodes
    ranks = seen(out, "resumed")
    one = engine_fakes.FakeStream(driver.GLOBAL_BATCH).batches(0)
    for step in range(driver.ITERATIONS):
        expected = driver.fingerprint(next(one))
        assert ranks[0]["batches"][str(step)] + ranks[1]["batches"][str(step)] == expected, step


def test_global_rank_0_alone_locks_logs_and_checkpoints(two_nodes) -> None:
    out, outputs = two_nodes
    ranks = seen(out, "resumed")
    assert ranks[0]["lock"]["pid"] == ranks[1]["lock"]["pid"] == ranks[0]["pid"]  # one lock, rank 0's
    assert ranks[0]["folders"] == ranks[1]["folders"] == ["resumed"]  # one run folder, seen from both nodes
    assert [s for s, _ in ckpt.list_checkpoints(out / "resumed")] == [5, 10]
    assert sorted(p.name for p in (out / "resumed").iterdir()) == [
        "checkpoints", "metrics.jsonl", "recipe.yaml", "run.json",
    ]  # fmt: skip
    # the agent whose worker is global rank 0 prints the run's log; the other node prints none of it
    by_rank = {0 if f"run folder: {out / 'resumed'}" in text else 1: text for text in outputs}
    assert sorted(by_rank) == [0, 1], outputs
    assert by_rank[0].count(f"resuming {out / 'resumed'} from step 5") == 1
    assert "run folder" not in by_rank[1] and "DistributedDataParallel" not in by_rank[1]


def test_a_sigterm_on_one_node_stops_both_at_one_step_with_one_checkpoint(two_nodes) -> None:
    out, _ = two_nodes
    ranks = seen(out, "signal")
    where = out / "signal" / "checkpoints" / "ckpt-00000004"
    message = f"stopped by SIGTERM at step 4 of 10; checkpoint {where} written; continue with --resume auto"
    assert [r["stopped"] for r in ranks.values()] == [{"message": message, "exit_code": 143}] * 2
    assert [s for s, _ in ckpt.list_checkpoints(out / "signal")] == [4]
    assert [r["step"] for r in step_lines(out / "signal")] == [1, 2, 3, 4]


def test_a_step_costs_one_all_reduce_and_ddp_sees_gradients_in_its_bucket_layout(two_nodes) -> None:
    out, _ = two_nodes
    for record in seen(out, "count").values():
        assert record["all_reduces_per_step"] == [1, 1, 1, 1]  # the NaN guard's flags carry the stop votes
        assert record["grad_stride_warnings"] == 0


def test_a_stop_asked_on_one_node_only_stops_both_at_that_step(two_nodes) -> None:
    """A recipe callback may ask on one rank alone, after the step's all-reduce: such runs
    agree on requests in one more all-reduce per step, and both ranks stop at step 3."""
    out, _ = two_nodes
    ranks = seen(out, "request")
    assert [r["step"] for r in ranks.values()] == [3, 3]
    assert [r["all_reduces_per_step"] for r in ranks.values()] == [[2, 2, 2]] * 2
    assert [s for s, _ in ckpt.list_checkpoints(out / "request")] == [3]


def test_an_elastic_agent_restarts_a_killed_worker_and_training_goes_on_by_itself(tmp_path: Path, reference) -> None:
    [(code, text)] = agents(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "--max-restarts", "1", str(DRIVER), str(tmp_path),
         "elastic"]
    )  # fmt: skip
    assert code == 0, text[-4000:]
    first, second = seen(tmp_path, "elastic", 0), seen(tmp_path, "elastic", 1)
    assert list(first) == [], first  # rank 1 was killed; the agent stopped rank 0 before it wrote
    assert sorted(second) == [0, 1] and all(r["start"] == 4 and r["step"] == 10 for r in second.values())
    run_dir = tmp_path / "elastic"
    assert json.loads((run_dir / "run.json").read_text())["resumed_from"].endswith("ckpt-00000004")
    assert "torchrun restarted the workers (restart 1)" in text
    assert_matches_one_process(run_dir, reference)  # steps 5 and 6 lost and trained again, nothing else
