"""The training loop in-process, on a tiny conv net and a contract-keeping fake stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import engine_fakes
import pytest
import torch
from plugin_dists import write_dist
from safetensors.torch import load_file

from restorekit.contracts import ModelAux
from restorekit.engine import checkpoint as ckpt
from restorekit.engine.train import Trainer, TrainingDiverged, train
from restorekit.errors import CheckpointError
from restorekit.recipes import load_yaml

engine_fakes.register()


def recipe(out: Path, **train_keys: Any) -> dict:
    keys = {
        "iterations": 12,
        "batch_size": 4,
        "ckpt_every": 4,
        "log_every": 1,
        "schedule": {"warmup_iters": 2},
        "lr": 1e-3,
        "out_dir": str(out),
        "progress": False,
        "deterministic": True,
    }
    keys.update(train_keys)
    return {
        "name": "engine-test",
        "model": {"type": "engine_test_convnet"},
        "loss": {"type": "engine_test_nan"},
        "train": keys,
    }


def run(rec: dict, **kwargs: Any):
    return train(rec, stream=engine_fakes.FakeStream(rec["train"]["batch_size"]), **kwargs)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_tensors(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    step, path = ckpt.list_checkpoints(run_dir)[-1]
    return {"model": load_file(str(path / "model.safetensors")), "ema": load_file(str(path / "ema.safetensors"))}


def test_a_few_iterations_write_a_complete_run_folder(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=30, keep_last=2)
    result = run(rec)
    run_dir = result.run_dir
    assert result.step == 30 and result.skipped_steps == 0
    assert load_yaml(run_dir / "recipe.yaml") == rec  # resolved recipe round-trips
    info = json.loads((run_dir / "run.json").read_text())
    assert {"restorekit", "torch", "timm", "open_clip", "plugins"} <= set(info["versions"])
    assert info["params"]["trainable"] == sum(p.numel() for p in engine_fakes.LocalConvNet().parameters())
    assert [s for s, _ in ckpt.list_checkpoints(run_dir)] == [28, 30]  # keep_last 2
    logged = [r for r in records(run_dir) if "event" not in r]
    assert [r["step"] for r in logged] == list(range(1, 31))
    assert logged[0]["lr"] == pytest.approx(5e-4) and logged[1]["lr"] == pytest.approx(1e-3)
    assert logged[-1]["terms"] == {"engine_test_nan": pytest.approx(logged[-1]["loss"])}
    first = sum(r["loss"] for r in logged[:5]) / 5
    last = sum(r["loss"] for r in logged[-5:]) / 5
    assert last < first  # it learns to denoise


def test_run_json_records_every_plugin_by_name_and_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    write_dist(
        site,
        "rk-recorded",
        "4.5.6",
        {"restorekit.fusions": {"recorded": "rkt_recorded:Part"}},
        {"rkt_recorded.py": "class Part:\n    pass\n"},
    )
    monkeypatch.syspath_prepend(str(site))
    result = run(recipe(tmp_path / "run", iterations=2, schedule={"warmup_iters": 1}))
    plugins = json.loads((result.run_dir / "run.json").read_text())["versions"]["plugins"]
    assert plugins.get("rk-recorded") == "4.5.6", plugins


def test_frozen_parts_stay_out_and_aux_reaches_the_loss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = recipe(tmp_path / "run", iterations=2, schedule={"warmup_iters": 1})
    rec["model"] = {"type": "engine_test_convnet", "aux": True, "frozen_guide": True}
    trainer = Trainer(rec, stream=engine_fakes.FakeStream(4))
    guide_before = trainer.model.guide.proj.weight.clone()
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.body.parameters()}
    trainer.run()
    assert torch.equal(trainer.model.guide.proj.weight, guide_before)
    assert trainer.model.calls_with_aux == 2
    assert all(isinstance(a, ModelAux) and a.backbone is trainer.model.guide for a in trainer.loss_fn.saw_aux)
    tensors = final_tensors(tmp_path / "run")
    assert not any(k.startswith("guide.") for k in tensors["model"]) and "body.0.weight" in tensors["model"]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["frozen"] == {"guide": {"name": "fake_guide", "weights": None, "sha256": None}}
    assert "frozen part 'guide' (fake_guide) is RANDOMLY INITIALISED" in caplog.text


def test_nan_steps_are_skipped_and_logged(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=8, ckpt_every=100)
    rec["loss"] = {"type": "engine_test_nan", "nan_calls": [2, 3]}
    trainer = Trainer(rec, stream=engine_fakes.FakeStream(4))
    seen: list[tuple[int, torch.Tensor, int]] = []
    original = trainer.train_step

    def spy(batch: Any, step: int):
        out = original(batch, step)
        seen.append((step, trainer.model.body[0].weight.detach().clone(), trainer.ema.updates))
        return out

    trainer.train_step = spy  # type: ignore[method-assign]
    result = trainer.run()
    assert result.skipped_steps == 2 and result.step == 8  # the counter advances past skips
    # steps 2 and 3 (0-based) changed neither weights nor EMA
    assert torch.equal(seen[1][1], seen[2][1]) and torch.equal(seen[2][1], seen[3][1])
    assert seen[1][2] == seen[3][2] == 2 and seen[4][2] == 3
    assert not torch.equal(seen[3][1], seen[4][1])
    skips = [r for r in records(result.run_dir) if r.get("event") == "nonfinite_skip"]
    assert [r["step"] for r in skips] == [3, 4] and skips[0]["loss"] == "nan"
    tensors = final_tensors(result.run_dir)
    assert all(torch.isfinite(t).all() for part in tensors.values() for t in part.values())


def test_too_many_nan_steps_abort_and_leave_finite_checkpoints(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=50, ckpt_every=2, max_nonfinite=3)
    rec["loss"] = {"type": "engine_test_nan", "nan_calls": list(range(5, 50))}
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row.*train.max_nonfinite = 3") as raised:
        run(rec)
    found = ckpt.list_checkpoints(tmp_path / "run")
    assert found and found[-1][0] == 6  # written during the skips, from the finite weights ...
    assert f"the last good checkpoint is {found[-2][1]}" in str(raised.value)  # ... so step 4 is the good one
    tensors = final_tensors(tmp_path / "run")
    assert all(torch.isfinite(t).all() for part in tensors.values() for t in part.values())


NOISY = {"type": "engine_test_convnet", "noise": 0.05}  # draws the global python, numpy, torch RNGs


def test_resume_after_interruption_is_bitwise_identical(tmp_path: Path) -> None:
    """Weights, EMA and the global generators' states (the model draws them) carry over."""
    full = run({**recipe(tmp_path / "full", iterations=14, ckpt_every=5), "model": NOISY})

    rec = {**recipe(tmp_path / "cut", iterations=14, ckpt_every=5), "model": NOISY}
    engine_fakes.run_until(Trainer(rec, stream=engine_fakes.FakeStream(4)), 8)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "cut")] == [5]
    resumed = run(rec, resume="auto")
    a, b = final_tensors(full.run_dir), final_tensors(resumed.run_dir)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    # the log of the resumed run has each step once, as the uninterrupted one
    assert [r["step"] for r in records(resumed.run_dir)] == [r["step"] for r in records(full.run_dir)]


def test_a_checkpoint_with_the_old_scheduler_key_resumes_bitwise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoints written before the rename hold the schedule under "scheduler": still read, same run."""
    full = run({**recipe(tmp_path / "full", iterations=10, ckpt_every=5), "model": NOISY})
    rec = {**recipe(tmp_path / "cut", iterations=10, ckpt_every=5), "model": NOISY}
    engine_fakes.run_until(Trainer(rec, stream=engine_fakes.FakeStream(4)), 7)
    ((_, path),) = ckpt.list_checkpoints(tmp_path / "cut")
    state = torch.load(path / ckpt.STATE_FILE, weights_only=True)
    assert state["schedule"]["lr"] == pytest.approx(records(tmp_path / "cut")[4]["lr"])  # the rate of step 5
    state["scheduler"] = state.pop("schedule")  # the old layout
    state["scheduler"]["lr"] *= 2  # and a rate the recipe's schedule no longer gives: said, not fatal
    torch.save(state, path / ckpt.STATE_FILE)
    resumed = run(rec, resume="auto")
    assert "the learning rate at step 5 was" in caplog.text
    a, b = final_tensors(full.run_dir), final_tensors(resumed.run_dir)
    assert all(torch.equal(a[part][k], b[part][k]) for part in ("model", "ema") for k in a[part])
    new = torch.load(ckpt.list_checkpoints(resumed.run_dir)[-1][1] / ckpt.STATE_FILE, weights_only=True)
    assert "schedule" in new and "scheduler" not in new


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=4)
    run(rec)
    with pytest.raises(CheckpointError, match="already holds checkpoints; pass --resume auto"):
        run(rec)
    again = run(rec, resume="auto")  # nothing left to do, still fine
    assert again.step == 4
    older = ckpt.list_checkpoints(tmp_path / "run")[0][1]
    assert older.name == "ckpt-00000004"
    more = dict(rec, train={**rec["train"], "iterations": 10})
    run(more, resume=str(tmp_path / "run"))  # a run folder: its newest valid checkpoint
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [8, 10]
    with pytest.raises(CheckpointError, match="holds newer checkpoints .*ckpt-00000010"):
        run(more, resume=str(tmp_path / "run" / "checkpoints" / "ckpt-00000008"))


def test_evaluation_without_test_images_is_a_recipe_error(tmp_path: Path) -> None:
    from restorekit.errors import RecipeError

    with pytest.raises(RecipeError, match="need test images, but the data section has no 'val' tasks"):
        run(recipe(tmp_path / "run", val_every=2), eval_sets={})
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_validation_keeps_best_and_eval_after(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=6, ckpt_every=100, val_every=2, keep_last=1)
    rec["eval"] = {"crop_multiple": 8, "grid": True}
    sets = {"noise": engine_fakes.FakeEvalSet(2, 24), "other": engine_fakes.FakeEvalSet(1, 20, seed=3)}
    result = run(rec, eval_sets=sets, eval_after=True)
    vals = [r for r in records(result.run_dir) if r.get("event") == "validation"]
    assert [v["step"] for v in vals] == [2, 4, 6]
    best = ckpt.read_best(result.run_dir)
    scores = {v["step"]: v["mean"]["psnr"] for v in vals}
    assert best["step"] == max(scores, key=scores.get)
    kept = [s for s, _ in ckpt.list_checkpoints(result.run_dir)]
    assert best["step"] in kept and 6 in kept
    report = json.loads((result.run_dir / "eval" / "eval.json").read_text())
    assert report["protocol"]["crop"] == "centre crop to a multiple of 8"
    assert report["tasks"]["noise"]["images"] == 2 and report["tasks"]["other"]["images"] == 1
    assert (result.run_dir / "eval" / "grid.png").stat().st_size > 0
    out = result.final_eval["report"]
    assert "| noise | 2 |" in out and "PSNR input" in out
    worse = [t for t, row in result.final_eval["tasks"].items() if row["psnr"] <= row["psnr_in"]]
    verdict = (
        f"does not beat the input on: {', '.join(worse)} (psnr)" if worse else "beats the input on every task (psnr)"
    )
    assert verdict in out  # judged by train.best_metric (here eval.metrics[0], psnr) in its direction


def test_resume_auto_continues_only_this_recipes_own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`exp --resume auto` must not take over `runs/exp-lr2-<stamp>`, though it starts with `exp-`."""
    monkeypatch.chdir(tmp_path)

    def named(name: str, iterations: int) -> dict:
        rec = recipe(tmp_path, iterations=iterations)
        rec["train"].pop("out_dir")
        return {**rec, "name": name}

    own = run(named("exp", 4)).run_dir
    other = run(named("exp-lr2", 4)).run_dir  # newer, with checkpoints
    resumed = run(named("exp", 8), resume="auto")
    assert resumed.run_dir == own != other
    assert [s for s, _ in ckpt.list_checkpoints(other)] == [4]
    assert "name: exp-lr2" in (other / "recipe.yaml").read_text()


def test_a_checkpoint_named_from_inside_its_folder_resumes_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(recipe(tmp_path / "run", iterations=4))
    monkeypatch.chdir(tmp_path / "run" / "checkpoints")
    resumed = run(recipe(tmp_path / "run", iterations=8), resume="ckpt-00000004")
    assert resumed.run_dir == (tmp_path / "run").resolve()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [4, 8]
    assert not (tmp_path / "run" / "checkpoints" / "checkpoints").exists()


def test_switching_ema_on_resumes_from_the_checkpoint_instead_of_discarding_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(recipe(tmp_path / "run", iterations=8, ema_decay=None))
    resumed = run(recipe(tmp_path / "run", iterations=12, ema_decay=0.9), resume="auto")
    assert resumed.step == 12
    assert "holds no EMA" in caplog.text
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert not [n for n in names if "corrupt" in n], names
    assert [r["step"] for r in records(resumed.run_dir) if "loss" in r and "event" not in r] == list(range(1, 13))
    assert "ema.safetensors" in {p.name for p in ckpt.list_checkpoints(tmp_path / "run")[-1][1].iterdir()}


def test_resuming_with_a_changed_model_names_the_checkpoint_and_the_tensor(tmp_path: Path) -> None:
    run(recipe(tmp_path / "run", iterations=4))
    wider = recipe(tmp_path / "run", iterations=8)
    wider["model"] = {"type": "engine_test_convnet", "width": 16}
    with pytest.raises(
        CheckpointError, match=r"ckpt-00000004 does not fit the recipe's model: .*shape mismatch.*body\.0\.weight"
    ):
        run(wider, resume="auto")
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [4]  # nothing set aside


def test_a_fresh_start_drops_the_log_of_a_run_that_died_before_its_first_checkpoint(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=8, ckpt_every=100)
    engine_fakes.run_until(Trainer(rec, stream=engine_fakes.FakeStream(4)), 6)
    assert ckpt.list_checkpoints(tmp_path / "run") == [] and records(tmp_path / "run")
    result = run(rec)
    assert [r["step"] for r in records(result.run_dir) if "event" not in r] == list(range(1, 9))
