"""train / eval / restore through subprocesses: the demo recipe, SIGKILL and resume, torchrun DDP."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo" / "dino_ir_tiny.yaml"  # the README's main command
BASELINE = ROOT / "recipes" / "demo" / "restormer_tiny.yaml"
VENV_BIN = Path(sys.executable).parent

# The demo recipes, shrunk: same parts and data, a few seconds of work.
DATA = [
    "-o",
    "data.patch_size=32",
    "-o",
    "train.batch_size=2",
    "-o",
    "train.threads=1",
    "-o",
    "train.progress=false",
    "-o",
    "train.log_every=1",
    "-o",
    "train.schedule.warmup_iters=2",
]
for _task in ("noise", "rain", "haze"):
    DATA += ["-o", f"data.val.{_task}.dataset.max_size=48", "-o", f"data.train.{_task}.dataset.max_size=96"]
SMALL_DINO_IR = [
    "-o",
    "model.body.dim=8",
    "-o",
    "model.body.heads=[1,1,2,2]",
    "-o",
    "model.fusion_channels=16",
    "-o",
    "model.backbone.model_kwargs.embed_dim=32",
    "-o",
    "model.adapter.head_channels=8",
]
SMALL_RESTORMER = ["-o", "model.dim=8", "-o", "model.heads=[1,1,2,2]"]
TINY = SMALL_DINO_IR + DATA
TINY_BASELINE = SMALL_RESTORMER + DATA


def env() -> dict[str, str]:
    return {**os.environ, "RESTOREKIT_DISABLE_PLUGINS": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "restorekit", *args],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=timeout,
    )


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt-*[0-9]"))
    out = {f"model/{k}": v for k, v in load_file(str(ckpts[-1] / "model.safetensors")).items()}
    out.update({f"ema/{k}": v for k, v in load_file(str(ckpts[-1] / "ema.safetensors")).items()})
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The demo recipe for 6 iterations, evaluated at the end as the demo does."""
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = cli(
        "train", str(DEMO), *TINY, "-o", "train.iterations=6", "-o", "train.ckpt_every=3", "-o", f"train.out_dir={out}"
    )
    return out, proc


def test_demo_recipe_trains_evaluates_and_draws_a_grid(demo_run) -> None:
    run_dir, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for task in ("noise", "rain", "haze"):
        assert f"| {task} | 3 |" in proc.stdout  # input vs restored, per task
    assert "protocol: centre crop to a multiple of 16, metrics on RGB" in proc.stdout
    assert "frozen part 'backbone' (vit_small_patch14_dinov2) is RANDOMLY INITIALISED" in proc.stdout
    assert (run_dir / "eval" / "grid.png").stat().st_size > 10_000
    report = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert set(report["tasks"]) == {"noise", "rain", "haze"}
    assert all(row["psnr_in"] > 5 for row in report["tasks"].values())
    assert [r["step"] for r in records(run_dir)] == list(range(1, 7))
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt-00000006"]  # keep_last 1


def test_eval_command_reports_tables(demo_run, tmp_path: Path) -> None:
    run_dir, _ = demo_run
    proc = cli(
        "eval",
        str(DEMO),
        "--weights",
        str(run_dir),
        *TINY,
        "-o",
        "eval.crop_multiple=0",
        "--report",
        str(tmp_path / "rep"),
        "--save-outputs",
        str(tmp_path / "img"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "protocol: full image" in proc.stdout and "| haze | 3 |" in proc.stdout
    report = json.loads((tmp_path / "rep" / "eval.json").read_text())
    trained = json.loads((run_dir / "eval" / "eval.json").read_text())
    # same weights (EMA), same images; only the crop differs (full vs multiple of 16)
    assert report["protocol"]["weights"].endswith("ema.safetensors")
    assert report["tasks"]["noise"]["images"] == trained["tasks"]["noise"]["images"] == 3
    assert len(list((tmp_path / "img" / "rain").glob("*.png"))) == 3


def test_restore_keeps_formats_and_never_overwrites(demo_run, tmp_path: Path) -> None:
    from restorekit.io.image_files import encode_png16, load_image, write_image

    run_dir, _ = demo_run
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    write_image(src / "gray.png", torch.rand(1, 40, 50))
    rgba = torch.rand(4, 70, 90)
    write_image(src / "rgba.png", rgba)
    (src / "deep.png").write_bytes(encode_png16(rng.integers(0, 65535, (30, 33, 3), dtype=np.uint16)))
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    proc = cli("restore", str(src), str(tmp_path / "out"), "--weights", str(run_dir), "--tile", "32", "--overlap", "12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    gray, alpha, deep = (load_image(tmp_path / "out" / n) for n in ("gray.png", "rgba.png", "deep.png"))
    assert gray.gray and gray.rgb.shape == (3, 40, 50)
    assert alpha.alpha is not None and torch.equal(alpha.alpha, load_image(src / "rgba.png").alpha)
    assert deep.bit_depth == 16 and deep.rgb.shape == (3, 30, 33)
    # an input is never replaced without --overwrite, and nothing was touched
    again = cli("restore", str(src / "gray.png"), str(src / "gray.png"), "--weights", str(run_dir))
    assert again.returncode == 2 and "is the input itself; pass --overwrite" in again.stderr
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    forced = cli("restore", str(src / "gray.png"), str(src / "gray.png"), "--weights", str(run_dir), "--overwrite")
    assert forced.returncode == 0 and (src / "gray.png").read_bytes() != before["gray.png"]


def newest_checkpoint(run_dir: Path) -> int:
    """Step of the newest complete checkpoint folder (0 when there is none)."""
    return max((int(p.name[5:]) for p in (run_dir / "checkpoints").glob("ckpt-*[0-9]")), default=0)


def kill_seed() -> int:
    """The seed of the kill moments: RESTOREKIT_KILL_SEED to replay a failure, else a fresh one."""
    seed = int(os.environ.get("RESTOREKIT_KILL_SEED") or time.time_ns() % 2**32)
    print(f"kill seed {seed} (replay with RESTOREKIT_KILL_SEED={seed})")
    return seed


def test_sigkill_at_a_random_moment_then_resume_is_bitwise_identical(tmp_path: Path) -> None:
    """Kill -9 twice at random moments, each after the (resumed) run wrote a new checkpoint;
    the resumed run ends with the same bytes as an uninterrupted one (CPU, one thread,
    deterministic algorithms)."""
    args = [
        str(BASELINE),
        *TINY_BASELINE,
        "-o",
        "train.iterations=40",
        "-o",
        "train.ckpt_every=4",
        "-o",
        "train.keep_last=2",
        "-o",
        "train.deterministic=true",
        "-o",
        "eval.after_train=false",
    ]
    full = cli("train", *args, "-o", f"train.out_dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]
    cut = tmp_path / "cut"
    seed = kill_seed()
    chooser = random.Random(seed)
    kills: list[tuple[int, int]] = []  # (checkpoint the run started from, newest when killed)
    for last_target in (24, 32):  # kill points well before the final checkpoint (40), however fast the steps run
        started_from = newest_checkpoint(cut)
        target = chooser.randrange(started_from + 4, max(last_target, started_from + 4) + 1, 4)  # one this run writes
        proc = subprocess.Popen(
            [sys.executable, "-m", "restorekit", "train", *args, "-o", f"train.out_dir={cut}", "--resume", "auto"],
            env=env(),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        # Progress first: this run has written the target checkpoint; then a random moment within the
        # next few steps (a step or a checkpoint write in progress).
        while time.time() < deadline and proc.poll() is None and newest_checkpoint(cut) < target:
            time.sleep(0.01)
        time.sleep(chooser.uniform(0.0, 0.1))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills.append((started_from, newest_checkpoint(cut)))
        proc.wait()
    print(f"killed at (checkpoint started from, newest checkpoint): {kills}")
    assert len(kills) == 2, f"kill seed {seed}: a run finished before it could be killed ({kills})"
    assert all(started < newest for started, newest in kills), f"kill seed {seed}: {kills}"
    assert not (cut / "checkpoints" / "ckpt-00000040").exists()
    resumed = cli("train", *args, "-o", f"train.out_dir={cut}", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = final_weights(tmp_path / "full"), final_weights(cut)
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"kill seed {seed}, killed at (started from, newest) {kills}: {differing[:5]}"
    assert [r["step"] for r in records(cut)] == [r["step"] for r in records(tmp_path / "full")]


def test_torchrun_gloo_two_processes_match_one(tmp_path: Path) -> None:
    """Global batch 4: two gloo ranks, each accumulating two micro-batches of 1 (gradients
    all-reduced once per step), give the loss trajectory of one process of 4."""
    args = [
        str(BASELINE),
        *TINY_BASELINE,
        "-o",
        "train.batch_size=4",
        "-o",
        "train.iterations=5",
        "-o",
        "train.ckpt_every=5",
        "-o",
        "eval.after_train=false",
        "-o",
        "train.device=cpu",
    ]
    one = cli("train", *args, "-o", f"train.out_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            str(VENV_BIN / "torchrun"),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "restorekit",
            "train",
            *args,
            "-o",
            "train.accumulate=2",
            "-o",
            f"train.out_dir={tmp_path / 'two'}",
        ],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["world_size"] == 2
    assert "global batch 4 = 2 x 2 x micro-batch 1" in two.stderr
    loss_one = [r["loss"] for r in records(tmp_path / "one")]
    loss_two = [r["loss"] for r in records(tmp_path / "two")]
    assert len(loss_one) == len(loss_two) == 5
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-4)
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-5)
    # only rank 0 wrote: one checkpoint folder, one log line per step
    assert len(list((tmp_path / "two" / "checkpoints").glob("ckpt-*"))) == 1


def test_torchrun_fine_tunes_a_backbone_whose_last_layers_get_no_gradient(tmp_path: Path) -> None:
    """`frozen: false` leaves the ViT's final norm (and blocks past the deepest layer used)
    without a gradient; DDP must be told, or it stops at step 2. The run ends once, printed once."""
    args = [str(DEMO), *TINY, "-o", "model.backbone.frozen=false", "-o", "train.batch_size=4",
            "-o", "train.iterations=3", "-o", "train.ckpt_every=3", "-o", "eval.after_train=false",
            "-o", "train.device=cpu", "-o", f"train.out_dir={tmp_path / 'run'}"]  # fmt: skip
    two = subprocess.run(
        [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "restorekit", "train", *args],
        capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert [r["step"] for r in records(tmp_path / "run") if "loss" in r] == [1, 2, 3]
    assert two.stdout.count("done: step 3") == 1
    weights = final_weights(tmp_path / "run")
    assert any(key.startswith("model/backbone.") for key in weights)  # trained, so checkpointed
