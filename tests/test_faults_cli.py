"""Fault suite through a real `restorekit train` process: SIGTERM as a scheduler sends it.

(The lock, SIGINT, the second signal and exact resume after a signal are tested in-process
in test_faults_engine.py, against a real second process where one is needed.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from test_engine_cli import BASELINE, ROOT, TINY_BASELINE, env, records


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_exits_143(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        str(BASELINE),
        *TINY_BASELINE,
        "-o",
        "train.iterations=100000",
        "-o",
        "train.ckpt_every=100000",
        "-o",
        "eval.after_train=false",
        "-o",
        f"train.out_dir={run_dir}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "restorekit", "train", *args],
        env=env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 180
        while proc.poll() is None and time.time() < deadline:
            if (run_dir / "metrics.jsonl").is_file() and len(records(run_dir)) >= 2:
                break
            time.sleep(0.1)
        assert (run_dir / "train.lock").is_file()  # held while it trains
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-2000:]
    step = max(r["step"] for r in records(run_dir))
    saved = run_dir / "checkpoints" / f"ckpt-{step:08d}"
    assert "SIGTERM received: finishing this step and writing a checkpoint" in err
    assert f"restorekit train: stopped by SIGTERM at step {step} of 100000; checkpoint {saved} written" in err
    assert saved.is_dir() and not (run_dir / "train.lock").exists()
