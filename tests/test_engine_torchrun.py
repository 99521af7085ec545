"""torchrun on the CPU (gloo, 2 processes): split validation, resume, per-rank generator states.

tests/torchrun_driver.py trains the engine fakes; one process and two ranks must
agree on the trajectory, the validation scores and the images each set counts, a
run stopped and resumed under torchrun must end where an uninterrupted one does,
and each rank must get its own generator state back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restorekit.engine import checkpoint as ckpt

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "torchrun_driver.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def launch(out: Path, *phases: str, processes: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RESTOREKIT_DISABLE_PLUGINS": "1"}
    prefix = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
    done = subprocess.run(
        [*prefix, str(DRIVER), str(out), *phases], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]


def final(run_dir: Path) -> ckpt.Checkpoint:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir)[-1][1])


def log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(one process, uninterrupted; two ranks, the plain run resumed and the noisy runs)."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    launch(one, "plain_full")
    launch(two, "plain_resumed", "noisy", processes=2)
    return one, two


def test_resumed_under_torchrun_matches_one_uninterrupted_process(runs) -> None:
    one, two = (r / "plain" for r in runs)
    assert json.loads((two / "run.json").read_text())["world_size"] == 2
    a, b = final(one), final(two)
    assert a.step == b.step == 8
    for part in ("model", "ema"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(y[key], x[key], rtol=1e-4, atol=1e-6)
    losses = [[r["loss"] for r in log(run) if "event" not in r] for run in (one, two)]
    assert len(losses[0]) == len(losses[1]) == 8
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-4, atol=0)


def test_validation_is_split_across_ranks_and_summed(runs) -> None:
    one, two = (r / "plain" for r in runs)
    vals = [[r for r in log(run) if r.get("event") == "validation"] for run in (one, two)]
    assert [v["step"] for v in vals[0]] == [v["step"] for v in vals[1]] == [4, 8]
    for single, split in zip(*vals):
        assert {t: row["images"] for t, row in split["tasks"].items()} == {"noise": 3, "other": 1}
        for task, row in single["tasks"].items():
            assert row["images"] == split["tasks"][task]["images"]
            for metric in ("psnr_in", "psnr", "ssim_in", "ssim"):
                assert split["tasks"][task][metric] == pytest.approx(row[metric], rel=1e-5), (task, metric)


def test_each_rank_resumes_its_own_generator_states(runs) -> None:
    """The noisy net draws the global generators, rank 1 more than rank 0: a resume that
    restored one rank's states on both, or none, would train on other noise."""
    two = runs[1]
    a, b = final(two / "noisy_full"), final(two / "noisy_cut")
    assert len(b.state["rng"]) == 2
    assert not torch.equal(b.state["rng"][0]["torch"], b.state["rng"][1]["torch"])
    for part in ("model", "ema"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), part
