"""``restorekit train --dry-run``: the plan of a run, from the meta device, with no GPU and no image."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from restorekit.cli import main
from restorekit.data.samples import SamplesDataset
from restorekit.engine.dry_run import dry_run, saved_for_backward
from restorekit.engine.flops import count_flops
from restorekit.engine.parts import build_model_and_loss
from restorekit.engine.step import forward_loss
from restorekit.recipes import load_recipe

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "dino_ir_tiny.yaml"
SMALLER = [
    "model.body.dim=8",
    "model.body.heads=[1,1,2,2]",
    "model.fusion_channels=16",
    "model.backbone.model_kwargs.embed_dim=32",
    "model.adapter.head_channels=8",
]
OPTIONS = [arg for override in SMALLER for arg in ("-o", override)]


@pytest.fixture
def no_gpu_no_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any CUDA initialisation or image read fails the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dry run touched a GPU or read an image")

    monkeypatch.setattr(torch.cuda, "_lazy_init", forbidden)
    monkeypatch.setattr(SamplesDataset, "load", forbidden)
    monkeypatch.setattr(SamplesDataset, "__getitem__", forbidden)


@pytest.mark.filterwarnings("ignore:.*randomly initialised")
def test_the_dry_run_counts_what_a_real_step_runs(no_gpu_no_pixels: None) -> None:
    recipe = load_recipe(str(DEMO), [*SMALLER, "train.accumulate=2"])
    report = dry_run(recipe, "demo", world_size=1)
    assert report.micro_batch == 2 and report.patch_size == 48
    torch.manual_seed(0)
    model, loss_fn = build_model_and_loss(recipe["model"], recipe["loss"])  # the real thing, on the CPU
    parts = {name: (t, f) for name, t, f in report.parts}
    assert parts["backbone"] == (0, sum(p.numel() for p in model.backbone.parameters()))
    assert parts["body"][0] == sum(p.numel() for p in model.body.parameters()) and parts["body"][1] == 0
    lq, gt = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    model.train()
    total, kept = saved_for_backward(model, lambda: forward_loss(model, model, loss_fn, lq, gt).total)
    # the meta trace keeps what a real forward keeps (a CPU attention kernel saves a few KB of its own)
    assert kept > 0 and report.memory.activations == pytest.approx(kept, rel=1e-3)
    real = count_flops(lambda: forward_loss(model, model, loss_fn, lq, gt).total.backward())
    assert report.flops_micro == pytest.approx(real, rel=1e-3)  # the CPU's fused attention counts a hair more
    trainable = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    assert report.memory.gradients == trainable and report.memory.optimizer == 2 * trainable  # AdamW's two moments
    assert report.memory.weights == sum(t.numel() * 4 for t in [*model.parameters(), *model.buffers()])
    assert 0.4 < report.memory.activations_16bit / report.memory.activations < 0.6
    shares = {t.name: t.share for t in report.tasks if t.section == "train"}
    assert set(shares) == {"noise", "rain", "haze"} and len(set(shares.values())) == 1


@pytest.mark.filterwarnings("ignore:.*randomly initialised")
def test_the_command_prints_the_plan_and_exits_0(
    no_gpu_no_pixels: None, capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "train",
            str(DEMO),
            *OPTIONS,
            "--dry-run",
            "--world-size",
            "2",
            "-o",
            "train.batch_size=8",
            "-o",
            "train.accumulate=2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "global batch 8 = 2 process(es) x accumulate 2 x micro-batch 2, patches of 48 px" in out
    for line in (
        "backbone",
        "per micro-step (2 x 48 px)",
        "whole run (2,000 steps)",
        "DDP gradient buckets",
        "activations kept for backward",
        "33.3% of samples",
    ):
        assert line in out, line
    assert not list(tmp_path.iterdir())  # nothing written: no run folder


@pytest.mark.filterwarnings("ignore:.*randomly initialised")
def test_a_missing_dataset_is_listed_and_fails_the_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "train",
            str(DEMO),
            *OPTIONS,
            "--dry-run",
            "-o",
            f"data.root={tmp_path}",
            "-o",
            "data.train.rain.dataset={type: derain, split: train}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "rain: ERROR: data.train.rain: derain train folder not found" in out
    assert "parameters per part:" in out and "1 data task(s) could not be listed" in out
