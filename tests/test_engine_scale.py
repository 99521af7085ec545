"""Training at scale on the CPU: gradient accumulation, DDP's skipped all-reduces, the fp16
guard with a loss scaler, numbers kept on the device until a log step, TensorBoard."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import engine_fakes
import pytest
import torch
import torch.distributed as dist
from test_engine_train import final_tensors, recipe, records

from restorekit.engine import checkpoint as ckpt
from restorekit.engine.scaler import LossScaling
from restorekit.engine.train import Trainer, train
from restorekit.errors import RecipeError

engine_fakes.register()


def run(rec: dict, **kwargs: Any):
    return train(rec, stream=engine_fakes.FakeStream(rec["train"]["batch_size"]), **kwargs)


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in records(run_dir) if "event" not in r]


# -- accumulation -------------------------------------------------------------------------------
def test_accumulation_follows_the_trajectory_of_one_step_with_the_same_global_batch(tmp_path: Path) -> None:
    one = run(recipe(tmp_path / "k1", iterations=10, ckpt_every=10))
    lines = {}
    for k in (2, 4):
        result = run(recipe(tmp_path / f"k{k}", iterations=10, ckpt_every=10, accumulate=k))
        torch.testing.assert_close(losses(result.run_dir), losses(one.run_dir), rtol=1e-5, atol=0)
        a, b = final_tensors(one.run_dir), final_tensors(result.run_dir)
        for part in ("model", "ema"):
            for key in a[part]:
                torch.testing.assert_close(b[part][key], a[part][key], rtol=1e-4, atol=1e-6)
        lines[k] = records(result.run_dir)[-1]
    assert lines[2]["terms"]["engine_test_nan"] == pytest.approx(lines[2]["loss"], rel=1e-6)  # terms: batch means
    info = json.loads((tmp_path / "k4" / "run.json").read_text())
    assert info["params"]["trainable"] > 0


def test_the_global_batch_must_split_into_micro_batches(tmp_path: Path) -> None:
    from restorekit.engine.accumulate import micro_batch_size

    assert micro_batch_size(32, 4, 2) == 4 and micro_batch_size(32, 1, 4) == 8 and micro_batch_size(8, 2, 4) == 1
    with pytest.raises(RecipeError, match=r"train.batch_size \(12\).*processes x train.accumulate \(2 x 4 = 8\)"):
        micro_batch_size(12, 2, 4)
    with pytest.raises(RecipeError, match=r"train.batch_size \(6\) is the global batch.*train.accumulate \(4\)"):
        Trainer(recipe(tmp_path / "run", batch_size=6, accumulate=4), stream=engine_fakes.FakeStream(6))


def test_accumulation_resumes_bitwise_after_an_interruption(tmp_path: Path) -> None:
    full = run(recipe(tmp_path / "full", iterations=12, ckpt_every=5, accumulate=2))
    rec = recipe(tmp_path / "cut", iterations=12, ckpt_every=5, accumulate=2)
    engine_fakes.run_until(Trainer(rec, stream=engine_fakes.FakeStream(4)), 7)  # checkpoints at optimizer steps
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "cut")] == [5]
    resumed = run(rec, resume="auto")
    a, b = final_tensors(full.run_dir), final_tensors(resumed.run_dir)
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert losses(resumed.run_dir) == losses(full.run_dir)


def test_ddp_all_reduces_gradients_once_per_optimizer_step(tmp_path: Path) -> None:
    """The trainer's own step under a one-process DDP: the first K - 1 micro-steps run in
    no_sync(), so the communication hook fires once per optimizer step, not once per micro-step."""
    from torch.nn.parallel import DistributedDataParallel

    trainer = Trainer(
        recipe(tmp_path / "run", iterations=3, ckpt_every=3, accumulate=4), stream=engine_fakes.FakeStream(4)
    )
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(trainer.model)
        reduced: list[int] = []

        def count(state, bucket):  # noqa: ANN001, ANN202 - DDP checks the annotations, and strings fail
            reduced.append(bucket.index())
            done: torch.futures.Future = torch.futures.Future()
            done.set_result(bucket.buffer())
            return done

        ddp.register_comm_hook(None, count)
        trainer.train_step.ddp = trainer.train_step.forward_model = ddp
        trainer.run()
    finally:
        dist.destroy_process_group()
    buckets = len(set(reduced))
    assert buckets >= 1 and len(reduced) == 3 * buckets  # 3 optimizer steps of 4 micro-steps


# -- precision and the NaN guard --------------------------------------------------------------
def test_fp16_is_refused_on_the_cpu_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"my.yaml: train.amp=fp16 .* needs a CUDA device; this run is on cpu"):
        Trainer(recipe(tmp_path / "run", amp="fp16", device="cpu"), source="my.yaml", stream=engine_fakes.FakeStream(4))


def test_fp16_autocast_reaches_evaluation_and_inference() -> None:
    from restorekit.engine.infer import autocast_context, inference_amp

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert inference_amp("auto", {"train": {"amp": "fp16"}}, cuda) == "fp16"  # scored as it trained
    assert inference_amp("auto", {"train": {"amp": "bf16"}}, cuda) is True
    assert inference_amp("auto", {"train": {"amp": "fp16"}}, cpu) is False
    assert autocast_context(cpu, "fp16").__class__.__name__ == "nullcontext"


def scaled_trainer(rec: dict, init_scale: float) -> Trainer:
    """A CPU trainer with a real GradScaler (CPU fp32 here; the engine uses it for CUDA fp16)."""
    trainer = Trainer(rec, stream=engine_fakes.FakeStream(4))
    trainer.train_step.scaling = LossScaling(
        True, torch.device("cpu"), scaler=torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1000)
    )
    return trainer


def test_a_scaler_overflow_is_skipped_without_counting_as_divergence(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=10, ckpt_every=100, max_nonfinite=2)
    rec["loss"] = {"type": "engine_test_nan", "inf_grad_calls": [2, 3, 4], "nan_calls": [7]}
    trainer = scaled_trainer(rec, init_scale=2.0**16)
    weights: list[torch.Tensor] = []
    original = trainer.train_step

    def spy(batch: Any, step: int):
        out = original(batch, step)
        weights.append(trainer.model.body[0].weight.detach().clone())
        return out

    trainer.train_step = spy  # type: ignore[method-assign]
    result = trainer.run()  # three overflows in a row do not reach max_nonfinite = 2
    events = [r for r in records(result.run_dir) if "event" in r]
    assert [(r["step"], r["event"]) for r in events] == [
        (3, "scaler_skip"),
        (4, "scaler_skip"),
        (5, "scaler_skip"),
        (8, "nonfinite_skip"),
    ]
    assert [r["scale"] for r in events[:3]] == [2.0**15, 2.0**14, 2.0**13]  # lowered at each overflow
    assert result.skipped_steps == 1  # only the NaN loss is a divergence
    assert (
        torch.equal(weights[1], weights[2])
        and torch.equal(weights[1], weights[4])
        and torch.equal(weights[6], weights[7])
    )
    assert not torch.equal(weights[4], weights[5])
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(result.run_dir)[-1][1]).state
    assert (
        state["loss_scaler"]["scale"] == trainer.state.train_step.scaling.current_scale() == 2.0**12
    )  # saved for resume


def test_overflows_below_a_scale_of_one_count_as_divergence(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=10, ckpt_every=100, max_nonfinite=2)
    rec["loss"] = {"type": "engine_test_nan", "inf_grad_calls": list(range(2, 10))}
    with pytest.raises(Exception, match=r"2 steps in a row had a non-finite loss or gradient"):
        scaled_trainer(rec, init_scale=2.0).run()
    events = [(r["event"], r.get("scale")) for r in records(tmp_path / "run") if "event" in r]
    assert events == [("scaler_skip", 1.0), ("nonfinite_skip", None), ("nonfinite_skip", None)]


def test_without_a_scaler_an_infinite_gradient_is_a_divergence(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=6, ckpt_every=100)
    rec["loss"] = {"type": "engine_test_nan", "inf_grad_calls": [2]}
    result = run(rec)
    assert [r["event"] for r in records(result.run_dir) if "event" in r] == ["nonfinite_skip"]
    assert result.skipped_steps == 1


# -- numbers stay on the device until a log step ------------------------------------------------
def test_step_results_stay_tensors_and_log_lines_average_the_window(tmp_path: Path) -> None:
    rec = recipe(tmp_path / "run", iterations=10, log_every=5, ckpt_every=100)
    rec["loss"] = {"type": "engine_test_nan", "nan_calls": [7]}
    trainer = Trainer(rec, stream=engine_fakes.FakeStream(4))
    seen: list[Any] = []
    original = trainer.train_step

    def spy(batch: Any, step: int):
        out = original(batch, step)
        seen.append(out)
        return out

    trainer.train_step = spy  # type: ignore[method-assign]
    trainer.run()
    assert all(
        isinstance(r.loss, torch.Tensor)
        and isinstance(r.grad_norm, torch.Tensor)
        and all(isinstance(t, torch.Tensor) for t in r.terms.values())
        for r in seen
    )
    lines = [r for r in records(tmp_path / "run") if "event" not in r]
    assert [r["step"] for r in lines] == [5, 10]
    step_losses = [float(r.loss) for r in seen]
    assert lines[0]["loss"] == pytest.approx(step_losses[4])
    assert lines[0]["loss_avg"] == pytest.approx(sum(step_losses[:5]) / 5)
    assert lines[1]["loss_avg"] == pytest.approx((sum(step_losses[5:7]) + sum(step_losses[8:])) / 4)  # skip left out
    assert lines[1]["grad_norm"] == pytest.approx(float(seen[9].grad_norm))


# -- TensorBoard ------------------------------------------------------------------------------------
def test_tensorboard_gets_losses_rates_validation_grids_and_the_recipe(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rec = recipe(
        tmp_path / "run",
        iterations=8,
        log_every=2,
        val_every=4,
        ckpt_every=100,
        loggers=["jsonl", {"type": "tensorboard", "flush_secs": 1}],
    )
    train(rec, stream=engine_fakes.FakeStream(4), eval_sets={"noise": engine_fakes.FakeEvalSet(count=2)})
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    for tag in (
        "train/loss",
        "train/loss_avg",
        "train/lr",
        "train/grad_norm",
        "train/it_s",
        "train/terms/engine_test_nan",
        "val/noise/psnr",
        "val/noise/ssim",
        "val/noise/psnr_in",
        "val/mean/psnr",
    ):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    logged = [r for r in records(tmp_path / "run") if "event" not in r]
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in logged] == [2, 4, 6, 8]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in logged])
    assert [e.step for e in events.Scalars("val/mean/psnr")] == [4, 8]
    grids = events.Images("val/noise/0")
    # input | restored | target, each the 24 px image centre-cropped to 16 (eval.crop_multiple)
    assert [g.step for g in grids] == [4, 8] and (grids[0].width, grids[0].height) == (3 * 16, 16)
    assert "recipe/text_summary" in tags["tensors"]
    text = events.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "engine_test_convnet" in text


def test_asking_for_tensorboard_without_the_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from restorekit.engine.config import train_config

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    with pytest.raises(
        RecipeError,
        match=r"my.yaml: train.loggers\[1\]: the tensorboard logger needs the optional "
        r"package 'tensorboard': pip install 'restorekit\[tensorboard\]'",
    ):
        train_config({"train": {"loggers": ["jsonl", "tensorboard"]}}, "my.yaml")


# -- data loading overlaps the step -----------------------------------------------------------------
def test_batches_are_pinned_when_training_on_cuda_unless_the_recipe_says(tmp_path: Path) -> None:
    from restorekit.data.build import build_train_stream

    data = {"num_workers": 2, "train": {"noise": {"dataset": {"type": "samples", "split": "test"}}}}
    assert build_train_stream(data, 2, 0, pin_memory=True).pin_memory is True  # null: the trainer's device decides
    assert build_train_stream(data, 2, 0).pin_memory is False
    assert build_train_stream({**data, "pin_memory": False}, 2, 0, pin_memory=True).pin_memory is False
    stream = build_train_stream({**data, "prefetch": 4}, 2, 0)
    assert stream.prefetch == 4
    with pytest.raises(RecipeError, match=r"data.prefetch must be an integer >= 1, got 0"):
        build_train_stream({**data, "prefetch": 0}, 2, 0)
    with pytest.raises(RecipeError, match=r"data.pin_memory must be true, false or null"):
        build_train_stream({**data, "pin_memory": "yes"}, 2, 0)
    batch = next(iter(stream.batches(3)))  # two workers, four batches ahead each, the same batch as in-process
    same = build_train_stream({**data, "num_workers": 0}, 2, 0).batch(3)
    assert torch.equal(batch["lq"], same["lq"]) and batch["task"] == same["task"]


# -- several processes: what the launchers' tests rest on, checked in one process ---------------------
def test_gradients_take_their_parameter_s_strides_without_a_copy() -> None:
    """The depthwise weight's gradient comes channels-last ([9, 1, 3, 1] against [9, 9, 3, 1]);
    the hook hands the same storage over with the parameter's strides, values unchanged."""
    from restorekit.engine.grad_layout import as_param_layout, keep_grad_layout

    plain, hooked = engine_fakes.DepthwiseNet(), engine_fakes.DepthwiseNet()
    hooked.load_state_dict(plain.state_dict())
    assert keep_grad_layout(hooked) == 3  # the three conv weights have a size-1 dimension; biases are 1-d
    lq = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for net in (plain, hooked):
        net(lq).square().mean().backward()
    weight = plain.depthwise.weight
    assert weight.stride() == (9, 9, 3, 1) and weight.grad.stride() == (9, 1, 3, 1)  # the mismatch DDP warned about
    assert hooked.depthwise.weight.grad.stride() == (9, 9, 3, 1)
    assert torch.equal(hooked.depthwise.weight.grad, weight.grad)
    view = as_param_layout(weight.grad, weight)
    assert view.data_ptr() == weight.grad.data_ptr() and view.stride() == weight.stride()  # a view, no copy
    other = torch.zeros(8, 9).t()  # strides differ where sizes are not 1: left as it is
    assert as_param_layout(other, torch.zeros(9, 8)) is other


def test_stop_votes_name_one_signal_by_precedence() -> None:
    import signal

    from restorekit.engine.signals import STOP_SIGNALS, StopSignals, agreed_signal

    assert agreed_signal([0.0, 0.0, 0.0, 0.0]) is None
    assert agreed_signal([0.0, 1.0, 1.0, 0.0]) == signal.SIGINT  # two ranks, two signals: the first listed
    assert agreed_signal([2.0, 0.0, 0.0, 0.0]) == signal.SIGTERM
    stop = StopSignals()
    assert stop.votes() == [0.0] * len(STOP_SIGNALS)
    stop.received = signal.SIGUSR2
    assert stop.votes() == [0.0, 0.0, 0.0, 1.0]


def test_a_worker_group_torchrun_restarted_resumes_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restorekit.engine.distributed import elastic_resume

    full = run(recipe(tmp_path / "full", iterations=10, ckpt_every=4))
    rec = recipe(tmp_path / "cut", iterations=10, ckpt_every=4)
    engine_fakes.run_until(Trainer(rec, stream=engine_fakes.FakeStream(4)), 6)
    assert elastic_resume(None) is None  # a first start: fresh, as asked
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert elastic_resume(None) == "auto" and elastic_resume("some/run") == "some/run"
    resumed = run(rec)  # no resume flag: the restart count says to go on
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["resumed_from"].endswith("ckpt-00000004")
    a, b = final_tensors(full.run_dir), final_tensors(resumed.run_dir)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert losses(resumed.run_dir) == losses(full.run_dir)
