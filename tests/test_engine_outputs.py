"""Restore output formats checked up front, unique --save-outputs names, the --no-ema note."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import engine_fakes
import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.engine.config import EvalConfig
from restorekit.engine.evaluate import evaluate, unique_output_names
from restorekit.engine.infer import ImageRestoreError, plan_outputs, restore_files
from restorekit.engine.loading import load_model_for_inference
from restorekit.engine.train import train

engine_fakes.register()


class Identity(torch.nn.Module):
    """Counts its calls, so a test can tell that nothing was restored."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


def _images(folder: Path) -> dict[str, Path]:
    """An 8-bit RGB PNG, an 8-bit RGBA PNG and a 16-bit gray PGM."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {"rgb": folder / "a.png", "rgba": folder / "rgba.png", "gray16": folder / "z16.pgm"}
    Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)).save(files["rgb"])
    Image.fromarray(rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)).save(files["rgba"])
    Image.fromarray(rng.integers(300, 65535, (9, 11), dtype=np.uint16)).save(files["gray16"])
    return files


# -- 2: output formats are checked before anything is restored -------------------------
def test_folder_restore_refuses_an_unwritable_format_before_writing_anything(tmp_path: Path) -> None:
    files = _images(tmp_path / "in")
    out = tmp_path / "out"
    # a.png would be restored and written first; z16.pgm (16-bit) cannot be written as PGM.
    with pytest.raises(ImageRestoreError) as info:
        plan_outputs(tmp_path / "in", out)
    message = str(info.value)
    bad = out / files["gray16"].name
    assert message.startswith(f"OUTPUT {bad}: 16-bit images can be written as PNG or TIFF, not .pgm")
    assert message.count(str(bad)) == 1 and str(files["gray16"]) in message
    assert not out.exists()  # nothing written, not even the folder


@pytest.mark.parametrize(
    "kind, suffix, problem",
    [
        ("rgba", ".jpg", "JPEG has no alpha channel"),
        ("gray16", ".jpg", "16-bit images can be written as PNG or TIFF, not .jpg"),
    ],
)
def test_file_restore_names_the_output_once(tmp_path: Path, kind: str, suffix: str, problem: str) -> None:
    files = _images(tmp_path / "in")
    target = tmp_path / f"out{suffix}"
    with pytest.raises(ImageRestoreError, match=problem) as info:
        plan_outputs(files[kind], target)
    assert str(info.value).startswith(f"OUTPUT {target}: {problem}")
    assert str(info.value).count(str(target)) == 1
    assert plan_outputs(files[kind], tmp_path / "fine.png") == [(files[kind], tmp_path / "fine.png")]


def test_late_write_errors_name_the_path_once(tmp_path: Path) -> None:
    """restore_files itself (pairs not planned by plan_outputs) must not repeat the path either."""
    files = _images(tmp_path / "in")
    target = tmp_path / "late.jpg"
    with pytest.raises(ImageRestoreError) as info:
        restore_files(Identity(), [(files["rgba"], target)], tile=None, overlap=0, device=torch.device("cpu"))
    assert str(info.value) == f"OUTPUT {target}: JPEG has no alpha channel; write PNG to keep it"


def test_restore_command_fails_before_loading_any_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from restorekit.cli import main

    files = _images(tmp_path / "in")
    code = main(["restore", str(files["rgba"]), str(tmp_path / "o.jpg"), "--weights", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert code == 2 and "JPEG has no alpha channel" in err and "missing" not in err


# -- 3: --save-outputs keeps subfolders, so equal stems do not overwrite each other -----
class NamedSet(torch.utils.data.Dataset):
    """Test pairs named like the folder datasets name them (relative path, no suffix)."""

    def __init__(self, names: list[str], listed: bool = True) -> None:
        gen = torch.Generator().manual_seed(3)
        self.items = []
        for name in names:
            lq, gt = engine_fakes.make_pair(gen, 16)
            self.items.append({"lq": lq, "gt": gt, "task": "noise", "name": name})
        if listed:
            self.names = list(names)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


@pytest.mark.parametrize("listed", [True, False])
def test_save_outputs_keeps_subfolders_and_never_overwrites(tmp_path: Path, listed: bool) -> None:
    from restorekit.io.image_files import read_image

    names = ["a/img", "b/img", "img", "img"]
    dataset = NamedSet(names, listed=listed)
    evaluate(
        Identity(), {"noise": dataset}, EvalConfig(crop_multiple=0), torch.device("cpu"), save_dir=tmp_path / "saved"
    )
    saved = sorted(p.relative_to(tmp_path / "saved").as_posix() for p in (tmp_path / "saved").rglob("*.png"))
    assert saved == ["noise/a/img.png", "noise/b/img.png", "noise/img-3.png", "noise/img.png"]
    for rel, item in zip(["a/img", "b/img", "img", "img-3"], dataset.items):  # each holds its own image
        stored = read_image(tmp_path / "saved" / "noise" / f"{rel}.png")
        assert (stored - item["lq"]).abs().max() <= 1 / 255


def test_output_names_stay_inside_the_task_folder() -> None:
    assert unique_output_names(["../x", "/abs/y", "c.png", "C", ""]) == ["x", "abs/y", "c", "C-3", "4"]


# -- 4: --no-ema on a run folder says the best step was chosen by the EMA's score ------
def _run(out: Path, **train_keys: Any) -> Path:
    keys = {
        "iterations": 4,
        "batch_size": 2,
        "ckpt_every": 100,
        "val_every": 2,
        "log_every": 1,
        "lr": 1e-3,
        "out_dir": str(out),
        "progress": False,
        "deterministic": True,
        **train_keys,
    }
    recipe = {
        "name": "engine-test",
        "model": {"type": "engine_test_convnet"},
        "loss": {"type": "engine_test_nan"},
        "train": keys,
    }
    eval_sets = {"noise": engine_fakes.FakeEvalSet(count=1, size=16)}
    return train(recipe, stream=engine_fakes.FakeStream(2, patch=16), eval_sets=eval_sets).run_dir


def test_no_ema_on_a_run_folder_notes_the_best_was_chosen_by_ema(tmp_path: Path) -> None:
    from restorekit.engine.loading import recipe_for_weights

    run_dir = _run(tmp_path / "run")
    recipe = recipe_for_weights(run_dir, None)
    _, file, notes = load_model_for_inference(recipe, run_dir, use_ema=False)
    assert file.name == "model.safetensors"
    [note] = [n for n in notes if "--no-ema" in n]
    assert str(file.parent) in note and "validation score of its EMA weights" in note
    _, file, notes = load_model_for_inference(recipe, run_dir, use_ema=True)
    assert file.name == "ema.safetensors" and not any("--no-ema" in n for n in notes)
    _, _, notes = load_model_for_inference(recipe, file.parent, use_ema=False)  # a chosen checkpoint: no note
    assert not any("--no-ema" in n for n in notes)


def test_no_ema_needs_no_note_when_the_raw_weights_were_scored(tmp_path: Path) -> None:
    from restorekit.engine.loading import recipe_for_weights

    run_dir = _run(tmp_path / "run", ema_decay=None)
    _, file, notes = load_model_for_inference(recipe_for_weights(run_dir, None), run_dir, use_ema=False)
    assert file.name == "model.safetensors" and not any("--no-ema" in n for n in notes)


@pytest.mark.parametrize(
    ("precision", "amp", "device", "expected"),
    [("auto", "auto", "cuda", True), ("auto", "bf16", "cuda", True), ("auto", "off", "cuda", False),
     ("bf16", "off", "cuda", True), ("fp32", "auto", "cuda", False), ("auto", "auto", "cpu", False),
     ("bf16", "bf16", "cpu", False)],
)  # fmt: skip
def test_inference_precision_follows_the_recipe_on_cuda_only(precision, amp, device, expected) -> None:
    from restorekit.engine.infer import inference_amp

    recipe = {"train": {"amp": amp}}
    assert inference_amp(precision, recipe, torch.device(device)) is expected
    assert inference_amp(precision, {}, torch.device(device)) is (device == "cuda" and precision != "fp32")


def test_evaluation_leaves_cudnn_autotuning_and_the_training_mode_as_it_found_them() -> None:
    """Autotuning is off while test images of many sizes are scored, then back on."""
    model = engine_fakes.LocalConvNet().train()
    seen: list[bool] = []
    original = model.forward

    def recording(lq):
        seen.append(torch.backends.cudnn.benchmark)
        return original(lq)

    model.forward = recording
    item = {"lq": torch.rand(3, 16, 16), "gt": torch.rand(3, 16, 16), "name": "a"}
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        evaluate(model, {"t": [item, item]}, EvalConfig(metrics=["psnr"], crop_multiple=0), torch.device("cpu"))
        assert seen == [False, False] and torch.backends.cudnn.benchmark is True and model.training
    finally:
        torch.backends.cudnn.benchmark = before


def test_restore_refuses_an_output_folder_it_cannot_create_before_loading_any_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from restorekit.cli import main

    files = _images(tmp_path / "in")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where the output's folder would go\n")
    target = blocker / "sub" / "o.png"
    code = main(["restore", str(files["rgb"]), str(target), "--weights", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert code == 2 and f"error: OUTPUT {target}: {blocker} is a file, not a folder" in err
    assert blocker.read_text() == "a file where the output's folder would go\n"
