"""Fault suite, the engine: non-finite weights and outputs, divergence, full and read-only
disks, the run-folder lock, failed starts (docs/reliability.md lists what each covers)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import engine_fakes
from restorekit.engine import checkpoint as ckpt
from restorekit.engine.config import EvalConfig
from restorekit.engine.evaluate import NonFiniteOutputError, evaluate
from restorekit.engine.infer import ImageRestoreError, restore_files
from restorekit.engine.loading import load_model_for_inference
from restorekit.engine.train import Trainer, TrainingDiverged, train
from restorekit.errors import CheckpointError

engine_fakes.register()


def recipe(out: Path, **train_keys: Any) -> dict:
    keys = {"iterations": 8, "batch_size": 2, "ckpt_every": 4, "log_every": 1, "lr": 1e-3, "out_dir": str(out),
            "progress": False, "deterministic": True, "schedule": {"warmup_iters": 1}}
    keys.update(train_keys)
    return {"name": "faults", "model": {"type": "engine_test_convnet"}, "loss": {"type": "engine_test_nan"},
            "train": keys}


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
    with pytest.raises(CheckpointError, match=r"w.safetensors holds NaN or infinite values in 1 tensor\(s\): body.2.bias"):
        load_model_for_inference({"model": {"type": "engine_test_convnet"}}, tmp_path / "w.safetensors")


def test_a_nan_output_is_never_written_nor_scored(tmp_path: Path) -> None:
    from restorekit.data.image_io import write_image

    write_image(tmp_path / "in.png", torch.rand(3, 8, 8))
    with pytest.raises(ImageRestoreError, match=r"INPUT .*in.png: the model's output holds NaN .*(192 of 192 values)"):
        restore_files(NaNOut(), [(tmp_path / "in.png", tmp_path / "out.png")], tile=None, overlap=0,
                      device=torch.device("cpu"))
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


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")])
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
