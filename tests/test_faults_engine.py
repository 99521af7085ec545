"""Fault suite, the engine: non-finite weights and outputs, divergence, full and read-only
disks, the run-folder lock, failed starts (docs/reliability.md lists what each covers)."""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import engine_fakes
import pytest
import torch
from safetensors.torch import load_file, save_file

from restorekit.engine import checkpoint as ckpt
from restorekit.engine.config import EvalConfig
from restorekit.engine.evaluate import NonFiniteOutputError, evaluate
from restorekit.engine.infer import ImageRestoreError, restore_files
from restorekit.engine.loading import load_model_for_inference
from restorekit.engine.run_lock import RunFolderBusy, RunLock
from restorekit.engine.signals import STOP_SIGNALS, StopSignals, TrainingInterrupted
from restorekit.engine.train import Trainer, TrainingDiverged, train
from restorekit.errors import CheckpointError

engine_fakes.register()


def recipe(out: Path, **train_keys: Any) -> dict:
    keys = {
        "iterations": 8,
        "batch_size": 2,
        "ckpt_every": 4,
        "log_every": 1,
        "lr": 1e-3,
        "out_dir": str(out),
        "progress": False,
        "deterministic": True,
        "schedule": {"warmup_iters": 1},
    }
    keys.update(train_keys)
    return {
        "name": "faults",
        "model": {"type": "engine_test_convnet"},
        "loss": {"type": "engine_test_nan"},
        "train": keys,
    }


def run(rec: dict, **kwargs: Any):
    return train(rec, stream=engine_fakes.FakeStream(rec["train"]["batch_size"]), **kwargs)


class NaNOut(torch.nn.Module):
    """Finite weights, NaN output: what overflowing precision or a broken part gives."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


# -- 2: non-finite weights and outputs are errors, never images or scores ----------------
def test_restore_and_eval_refuse_weights_holding_nan_naming_the_tensor(tmp_path: Path) -> None:
    model = engine_fakes.convnet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["body.2.bias"][1] = float("nan")
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"w.safetensors holds NaN or infinite values in 1 tensor\(s\): body.2.bias"
    ):
        load_model_for_inference({"model": {"type": "engine_test_convnet"}}, tmp_path / "w.safetensors")


def test_a_nan_output_is_never_written_nor_scored(tmp_path: Path) -> None:
    from restorekit.io.image_files import write_image

    write_image(tmp_path / "in.png", torch.rand(3, 8, 8))
    with pytest.raises(ImageRestoreError, match=r"INPUT .*in.png: the model's output holds NaN .*(192 of 192 values)"):
        restore_files(
            NaNOut(), [(tmp_path / "in.png", tmp_path / "out.png")], tile=None, overlap=0, device=torch.device("cpu")
        )
    assert not (tmp_path / "out.png").exists()
    sets = {"noise": engine_fakes.FakeEvalSet(count=1, size=16)}
    with pytest.raises(NonFiniteOutputError, match=r"eval task 'noise', image 'img0' \(16x16\): the model's output"):
        evaluate(NaNOut(), sets, EvalConfig(crop_multiple=0), torch.device("cpu"), save_dir=tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_the_last_good_checkpoint_is_the_last_one_before_the_divergence(tmp_path: Path) -> None:
    """Checkpoints written while steps are being skipped are marked; "last good" is the one before,
    and pruning keeps it (keep_last 1 would otherwise delete it)."""
    rec = recipe(tmp_path / "run", iterations=50, ckpt_every=2, keep_last=1, max_nonfinite=3)
    rec["loss"] = {"type": "engine_test_nan", "nan_calls": list(range(5, 50))}  # steps 6, 7, 8 skip
    with pytest.raises(TrainingDiverged) as raised:
        run(rec)
    steps = [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")]
    assert steps == [4, 6]
    good = tmp_path / "run" / "checkpoints" / "ckpt-00000004"
    assert f"the last good checkpoint is {good}" in str(raised.value)
    assert "ckpt-00000006 was written during the non-finite steps" in str(raised.value)
    meta = json.loads((tmp_path / "run" / "checkpoints" / "ckpt-00000006" / "meta.json").read_text())
    assert meta["nonfinite_streak"] == 1
    assert ckpt.resolve_weights(tmp_path / "run") == good / "ema.safetensors"  # --weights RUN avoids it too


# -- 13: any checkpoint folder works as --weights -----------------------------------------
def test_a_checkpoint_folder_under_any_name_works_as_weights(tmp_path: Path) -> None:
    run(recipe(tmp_path / "run", iterations=4))
    copied = tmp_path / "run" / "best-so-far"
    shutil.copytree(tmp_path / "run" / "checkpoints" / "ckpt-00000004", copied)
    assert ckpt.resolve_weights(copied) == copied / "ema.safetensors"
    assert ckpt.resolve_weights(copied, use_ema=False) == copied / "model.safetensors"
    model, used, _ = load_model_for_inference({"model": {"type": "engine_test_convnet"}}, copied)
    expected = load_file(str(copied / "ema.safetensors"))
    assert used == copied / "ema.safetensors" and torch.equal(model.body[0].weight, expected["body.0.weight"])


# -- 4: a full or read-only disk while checkpointing ---------------------------------------
def _refuse_checkpoint_writes(monkeypatch: pytest.MonkeyPatch, code: int, step: int) -> None:
    """Make the disk refuse checkpoint ``step``: ENOSPC after part of a file is written, or
    EACCES on its folder (tests run as root, whom a chmod does not stop)."""
    real_write, real_mkdir = os.write, os.mkdir
    name = ckpt.ckpt_name(step)

    def full_disk(fd: int, data: Any) -> int:
        if f"/{name}.tmp/" in os.readlink(f"/proc/self/fd/{fd}"):
            real_write(fd, bytes(data)[:16])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    def read_only(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith(f"{name}.tmp"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        real_mkdir(path, *args, **kwargs)

    if code == errno.ENOSPC:
        monkeypatch.setattr(os, "write", full_disk)
    else:
        monkeypatch.setattr(os, "mkdir", read_only)


@pytest.mark.parametrize(
    "code, reason", [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")]
)
def test_a_write_error_while_checkpointing_is_one_clear_error_and_resume_works_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    rec = recipe(tmp_path / "run", iterations=8, ckpt_every=4, keep_last=3)
    root = tmp_path / "run" / "checkpoints"
    with monkeypatch.context() as patch:
        _refuse_checkpoint_writes(patch, code, 8)
        with pytest.raises(ckpt.CheckpointWriteError) as info:
            run(rec)
    assert str(info.value).startswith(f"cannot write the checkpoint of step 8 into {root}: {reason}; the partial")
    assert sorted(p.name for p in root.iterdir()) == ["ckpt-00000004"]  # no .tmp left, the earlier one kept
    assert ckpt.load_checkpoint(root / "ckpt-00000004").step == 4
    assert run(rec, resume="auto").step == 8
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [4, 8]


def test_the_command_line_reports_other_disk_errors_without_a_traceback(monkeypatch, capsys) -> None:
    """A full disk outside checkpointing (the metrics log, run.json) is one line too."""
    import restorekit.commands.show as show
    from restorekit.cli import main

    def full(args: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/metrics.jsonl")

    monkeypatch.setattr(show, "run", full)
    assert main(["show", "dino_ir"]) == 2
    assert capsys.readouterr().err == "restorekit show: error: No space left on device: runs/x/metrics.jsonl\n"


# -- 1: one trainer per run folder ----------------------------------------------------------
HOLD = (
    "import sys, time; from pathlib import Path; from restorekit.engine.run_lock import RunLock; "
    "RunLock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)"
)


@pytest.fixture
def holder(tmp_path: Path):
    """Start a process that holds the lock of a run folder; yields (process, folder); never left running."""
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc, folder
    finally:
        proc.kill()
        proc.wait()


def test_a_held_run_folder_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(
    holder, caplog: pytest.LogCaptureFixture
) -> None:
    proc, folder = holder
    rec = recipe(folder, iterations=4)
    with pytest.raises(
        RunFolderBusy,
        match=rf"run folder {folder} is in use by another training run: "
        rf"pid {proc.pid} on {platform.node()}, started 20",
    ):
        run(rec)
    with pytest.raises(RunFolderBusy, match=f"pid {proc.pid}"):
        run(rec, resume="auto")
    assert sorted(p.name for p in folder.iterdir()) == ["train.lock"]  # the refused runs changed nothing
    proc.kill()  # kill -9: the lock file stays, its lock goes with the process
    proc.wait()
    assert run(rec, resume="auto").step == 4
    assert f"taking over the lock of pid {proc.pid} on {platform.node()}" in caplog.text
    assert not (folder / "train.lock").exists()  # released at the end


def test_a_second_trainer_in_the_same_process_is_refused_too(tmp_path: Path) -> None:
    held = RunLock.acquire(tmp_path / "run")
    try:
        with pytest.raises(RunFolderBusy, match=rf"this process \(pid {os.getpid()}\) already trains in it"):
            run(recipe(tmp_path / "run"))
    finally:
        held.release()
    assert run(recipe(tmp_path / "run", iterations=2)).step == 2


# -- 13: a start that fails leaves no run folder behind --------------------------------------
def test_a_failing_data_section_leaves_no_run_folder(tmp_path: Path) -> None:
    from restorekit.errors import DataError

    rec = recipe(tmp_path / "run")
    rec["data"] = {"train": {"x": {"dataset": {"type": "paired_folder", "path": str(tmp_path / "missing")}}}}
    with pytest.raises(DataError, match="missing"):
        train(rec)
    assert not (tmp_path / "run").exists()


# -- 3: SIGTERM and SIGINT finish the step, write a checkpoint, and stop --------------------
def _signal_at(trainer: Trainer, at: int, signum: int) -> None:
    """Send ``signum`` to this process while step ``at`` runs, as a scheduler or Ctrl-C would."""
    original = trainer.train_step

    def step(batch: Any, index: int) -> Any:
        if index == at:
            os.kill(os.getpid(), signum)
        return original(batch, index)

    trainer.train_step = step  # type: ignore[method-assign]


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_the_current_step_and_resume_is_exact(tmp_path: Path, signum: int, code: int) -> None:
    full = run(recipe(tmp_path / "full", iterations=10, ckpt_every=100))
    rec = recipe(tmp_path / "cut", iterations=10, ckpt_every=100)
    trainer = Trainer(rec, stream=engine_fakes.FakeStream(2))
    _signal_at(trainer, 5, signum)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.run()
    where = tmp_path / "cut" / "checkpoints" / "ckpt-00000006"
    assert info.value.exit_code == code
    assert str(info.value) == (
        f"stopped by {signal.Signals(signum).name} at step 6 of 10; checkpoint {where} "
        f"written; continue with --resume auto"
    )
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "cut")] == [6]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    resumed = run(rec, resume="auto")
    a = load_file(str(ckpt.list_checkpoints(full.run_dir)[-1][1] / "model.safetensors"))
    b = load_file(str(ckpt.list_checkpoints(resumed.run_dir)[-1][1] / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_after_the_first_signal_a_second_one_takes_the_default_action_at_once() -> None:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM
        # the kernel's default action now: a second SIGTERM or Ctrl-C ends the process there and then
        assert all(signal.getsignal(sig) is signal.SIG_DFL for sig in STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


# -- 4 (torch.save): a disk that fills up while state.pt is written ---------------------------
def test_a_disk_full_inside_torch_save_is_the_os_error_and_leaves_no_tmp(tmp_path: Path, monkeypatch) -> None:
    """torch.save streams state.pt and hides the OS's error behind its own ("unexpected pos");
    the checkpoint writer must still report ENOSPC and remove the partial folder."""
    real_write = os.write

    def full_at_state_pt(fd: int, data: Any) -> int:
        """The disk fills 4 KiB into state.pt (the error must come mid-file, as on a real disk:
        torch then hides it behind its own "unexpected pos" error)."""
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f"/{ckpt.STATE_FILE}"):
            room = 4096 - os.lseek(fd, 0, os.SEEK_CUR)
            if len(data) > room:
                real_write(fd, bytes(data)[: max(room, 0)])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    rec = recipe(tmp_path / "run", iterations=4, ckpt_every=4)
    root = tmp_path / "run" / "checkpoints"
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", full_at_state_pt)
        with pytest.raises(ckpt.CheckpointWriteError) as info:
            run(rec)
    assert str(info.value).startswith(f"cannot write the checkpoint of step 4 into {root}: No space left on device;")
    assert list(root.iterdir()) == []  # no ckpt-00000004.tmp left on the full disk


FILL_A_SMALL_DISK = """
import json, sys
from pathlib import Path
sys.path[:0] = sys.argv[2:4]
import engine_fakes
from restorekit.engine import checkpoint as ckpt
from restorekit.engine.train import train
engine_fakes.register()
run_dir = Path(sys.argv[1]) / "run"
rec = {"name": "full", "model": {"type": "engine_test_convnet", "width": 96}, "loss": {"type": "l1"},
       "train": {"iterations": 4, "batch_size": 2, "ckpt_every": 4, "out_dir": str(run_dir), "progress": False,
                 "schedule": {"warmup_iters": 1}}}
try:
    train(rec, stream=engine_fakes.FakeStream(2))
except ckpt.CheckpointWriteError as exc:
    print(json.dumps({"error": str(exc), "left": sorted(p.name for p in (run_dir / "checkpoints").iterdir())}))
"""


def _private_tmpfs_works(folder: Path) -> bool:
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder} && umount {folder}"],
        capture_output=True,
    )
    return probe.returncode == 0


def test_a_real_full_tmpfs_while_writing_state_pt_is_one_clear_error(tmp_path: Path) -> None:
    """A 1 MiB tmpfs in a private mount namespace: the weights files fit (2 x 353 KiB),
    state.pt (the Adam moments, 706 KiB) does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("unshare") is None or not _private_tmpfs_works(disk):
        pytest.skip("no private mount namespace here (unshare -m, mount -t tmpfs); the simulated test above runs")
    here = Path(__file__).resolve().parent
    command = 'mount -t tmpfs -o size=1m tmpfs "$1" && exec "$2" -c "$3" "$1" "$4" "$5"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", command, "sh", str(disk), sys.executable, FILL_A_SMALL_DISK,
         str(here.parent / "src"), str(here)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    root = disk / "run" / "checkpoints"
    assert outcome["error"].startswith(f"cannot write the checkpoint of step 4 into {root}: No space left on device;")
    assert outcome["left"] == []


# -- 1 (race): two restores to one output cannot both succeed --------------------------------
class FinishesFirst(torch.nn.Module):
    """The identity, during whose run "another restore" writes the same output first."""

    def __init__(self, output: Path) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from restorekit.io.image_files import write_image

        write_image(self.output, torch.zeros(3, 6, 6))
        return x


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_restore_never_replaces_an_output_written_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, overwrite: bool
) -> None:
    import restorekit.engine.restoring as restoring  # the names the restore path uses (imported at its top)
    from restorekit.cli import main
    from restorekit.io.image_files import read_image, write_image

    image = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0))
    write_image(tmp_path / "a.png", image)
    same = tmp_path / "same.png"
    # a resolved recipe always has a model section (the eager runtime reads no more of it)
    monkeypatch.setattr(restoring, "recipe_for_weights", lambda *args: {"model": {"type": "restormer"}})
    monkeypatch.setattr(restoring, "load_model_for_inference", lambda *a, **k: (FinishesFirst(same), Path("w"), []))
    args = ["restore", str(tmp_path / "a.png"), str(same), "--weights", "w", "--tile", "0"]
    code = main(args + (["--overwrite"] if overwrite else []))
    kept = read_image(same)
    if overwrite:  # told to replace: the last writer wins
        assert code == 0 and torch.allclose(kept, image, atol=1 / 255)
    else:
        assert code == 2 and torch.equal(kept, torch.zeros(3, 6, 6))  # the other restore's result is kept
        assert f"OUTPUT {same} was written by another process meanwhile; it was not replaced" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "same.png"]  # no temporary file left


# -- 8: a logger package that is installed but fails on import ---------------------------------
def test_a_tensorboard_that_fails_on_import_is_refused_before_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from restorekit.errors import RecipeError

    site = tmp_path / "site"
    (site / "tensorboard").mkdir(parents=True)
    (site / "tensorboard" / "__init__.py").write_text('raise TypeError("Descriptors cannot be created directly.")\n')
    monkeypatch.syspath_prepend(str(site))
    for name in list(sys.modules):
        if name.split(".")[0] == "tensorboard" or name.startswith("torch.utils.tensorboard"):
            monkeypatch.delitem(sys.modules, name)
    with pytest.raises(RecipeError) as info:
        run(recipe(tmp_path / "run", loggers=["jsonl", "tensorboard"]))
    message = str(info.value)
    assert (
        "train.loggers[1]: the tensorboard logger cannot run here: importing torch.utils.tensorboard failed" in message
    )
    assert "TypeError: Descriptors cannot be created directly." in message and "\n" not in message
    assert not (tmp_path / "run").exists()
