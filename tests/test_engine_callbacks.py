"""Callbacks: the events a run sends, in order with their payloads; recipe and plugin callbacks;
early stopping at the step a scripted metric sequence makes it stop."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import engine_fakes
import pytest
import torch
from plugin_dists import write_dist
from test_engine_train import recipe, records

from restorekit.contracts import Callback as CallbackContract
from restorekit.engine import checkpoint as ckpt
from restorekit.engine.callbacks import Callback, EarlyStopping
from restorekit.engine.train import train
from restorekit.errors import RecipeError
from restorekit.registry import CALLBACKS, METRICS, refresh_plugins

engine_fakes.register()


class ScriptedMetric:
    """A metric whose restored score at the k-th validation is ``scores[k]`` (one test image:
    evaluate scores the input, then the restored image); the input scores 0."""

    def __init__(self, scores: list[float], higher_is_better: bool) -> None:
        self.scores, self.higher_is_better = list(scores), higher_is_better
        self.calls = 0

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
        index, self.calls = self.calls, self.calls + 1
        return torch.tensor([self.scores[index // 2] if index % 2 else 0.0], dtype=torch.float64)


class Recorder(Callback):
    """Writes down every event it hears, with what the test checks of its payload."""

    made: list[Recorder] = []

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        Recorder.made.append(self)

    def on_train_start(self, loop: Any, step: int) -> None:
        self.seen.append(("start", step))

    def on_step(self, loop: Any, event: Any) -> None:
        assert loop.step == event.step and event.result.loss.shape == ()
        self.seen.append(("step", event.step, None if event.record is None else event.record["skipped_total"]))

    def on_skip(self, loop: Any, event: Any) -> None:
        assert math.isnan(event.loss)
        self.seen.append(("skip", event.step, event.in_a_row, event.total))

    def on_overflow(self, loop: Any, event: Any) -> None:
        self.seen.append(("overflow", event.step))

    def on_validation(self, loop: Any, event: Any) -> None:
        self.seen.append(("validation", event.step, event.mean["scripted"], event.is_best))

    def on_checkpoint(self, loop: Any, event: Any) -> None:
        assert event.path == loop.run_dir / "checkpoints" / ckpt.ckpt_name(event.step) and event.path.is_dir()
        self.seen.append(("checkpoint", event.step, event.is_best))

    def on_stop(self, loop: Any, event: Any) -> None:
        self.seen.append(("stop", event.step))

    def on_train_end(self, loop: Any, step: int) -> None:
        self.seen.append(("end", step))


@pytest.fixture
def parts() -> Any:
    """The recorder registered as a callback; ``script(scores, higher)`` registers the scripted metric."""
    Recorder.made.clear()
    CALLBACKS.register("engine_test_recorder", Recorder, replace=True)

    def script(scores: list[float], higher_is_better: bool = True) -> ScriptedMetric:
        metric = ScriptedMetric(scores, higher_is_better)
        METRICS.register("engine_test_scripted", metric, replace=True)
        return metric

    yield script
    CALLBACKS.unregister("engine_test_recorder")
    METRICS.unregister("engine_test_scripted")


def scripted_run(tmp_path: Path, callbacks: list[Any], nan_calls: tuple[int, ...] = (), **train_keys: Any) -> Any:
    rec = recipe(tmp_path / "run", callbacks=callbacks, **train_keys)
    rec["loss"] = {"type": "engine_test_nan", "nan_calls": list(nan_calls)}
    rec["eval"] = {"metrics": [{"type": "engine_test_scripted", "name": "scripted"}], "crop_multiple": 0}
    sets = {"noise": engine_fakes.FakeEvalSet(count=1, size=16)}
    return train(rec, stream=engine_fakes.FakeStream(rec["train"]["batch_size"]), eval_sets=sets), rec


def test_events_reach_a_recipe_callback_in_order_with_their_payloads(tmp_path: Path, parts: Any) -> None:
    parts([1.0, 3.0, 2.0])
    result, rec = scripted_run(
        tmp_path, ["engine_test_recorder"], (2,), iterations=6, log_every=3, val_every=2, ckpt_every=4, keep_last=5
    )
    (recorder,) = Recorder.made  # built from the registry by the recipe's train.callbacks
    assert isinstance(recorder, CallbackContract)
    assert recorder.seen == [
        ("start", 0),
        ("step", 1, None),
        ("step", 2, None),
        ("validation", 2, 1.0, True),  # the first validation is the best so far
        ("checkpoint", 2, True),  # a new best is saved at once
        ("skip", 3, 1, 1),  # the loss's third call is NaN: step 3 is skipped
        ("step", 3, 1),  # a log step: its record counts the skipped step
        ("step", 4, None),
        ("validation", 4, 3.0, True),
        ("checkpoint", 4, True),  # ckpt_every and a new best: one checkpoint
        ("step", 5, None),
        ("step", 6, 1),
        ("validation", 6, 2.0, False),
        ("checkpoint", 6, False),  # the last step
        ("end", 6),
    ]
    assert result.step == 6 and ckpt.read_best(result.run_dir) == {"step": 4, "metric": "scripted", "score": 3.0}
    assert [s for s, _ in ckpt.list_checkpoints(result.run_dir)] == [2, 4, 6]


@pytest.mark.parametrize(
    ("scores", "higher", "knobs", "stop_at", "best_at"),
    [
        # best 10; 12 beats 10 + 0.5; 12.4 and 12.3 do not beat 12 + 0.5: patience 2 used up at the 4th.
        ([10.0, 12.0, 12.4, 12.3, 20.0], True, {"patience": 2, "min_delta": 0.5}, 4, 3),
        # lower is better (the metric says so): 5, 4, then 4.2 is no improvement: patience 1 used up at the 3rd.
        ([5.0, 4.0, 4.2, 1.0], False, {"patience": 1}, 3, 2),
    ],
)
def test_early_stopping_stops_at_the_step_the_scores_give(
    tmp_path: Path, parts: Any, scores: list[float], higher: bool, knobs: dict, stop_at: int, best_at: int
) -> None:
    parts(scores, higher)
    every = 2
    spec = {"type": "early_stopping", "monitor": "scripted", **knobs}
    result, _ = scripted_run(tmp_path, [spec, "engine_test_recorder"], iterations=20, val_every=every, ckpt_every=100)
    step = stop_at * every  # the validation that used up the patience
    assert result.step == step
    assert [s for s, _ in ckpt.list_checkpoints(result.run_dir)][-1] == step  # stopped cleanly: its checkpoint
    assert ckpt.read_best(result.run_dir)["step"] == best_at * every
    assert Recorder.made[0].seen[-3:] == [("checkpoint", step, False), ("stop", step), ("end", step)]
    assert max(r["step"] for r in records(result.run_dir)) == step


def test_early_stopping_monitors_the_best_metric_by_default(tmp_path: Path, parts: Any) -> None:
    parts([3.0, 2.0, 1.0], higher_is_better=True)
    result, _ = scripted_run(tmp_path, [{"type": "early_stopping", "patience": 2}], iterations=10, val_every=1)
    assert result.step == 3  # best_metric: eval.metrics[0] (the scripted one), falling twice


def test_an_unknown_callback_name_gets_the_registrys_close_match(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"train.callbacks\[0\].*'early_stoping'.*did you mean 'early_stopping'"):
        train(recipe(tmp_path / "run", callbacks=[{"type": "early_stoping", "patience": 2}]))
    with pytest.raises(RecipeError, match=r"train.callbacks\[0\].*patiense"):
        train(recipe(tmp_path / "run", callbacks=[{"type": "early_stopping", "patiense": 2}]))
    assert not (tmp_path / "run").exists()


def test_early_stopping_knobs_and_monitor_are_checked(tmp_path: Path, parts: Any) -> None:
    with pytest.raises(RecipeError, match="patience must be >= 1"):
        EarlyStopping(patience=0)
    with pytest.raises(RecipeError, match="min_delta must be >= 0"):
        train(recipe(tmp_path / "run", callbacks=[{"type": "early_stopping", "min_delta": -1}]))
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
    parts([1.0])
    with pytest.raises(RecipeError, match=r"monitor 'ssim' is not among eval.metrics \(scripted\)"):
        scripted_run(tmp_path, [{"type": "early_stopping", "monitor": "ssim"}], iterations=3, val_every=1)


PLUGIN = '''
import json
from pathlib import Path


class StepCounter:
    """A plugin callback (no base class): counts steps, writes the count into the run folder."""

    def __init__(self, file="steps.json"):
        self.file, self.steps = file, 0

    def on_train_start(self, loop, step): pass
    def on_step(self, loop, event): self.steps += 1
    def on_overflow(self, loop, event): pass
    def on_skip(self, loop, event): pass
    def on_validation(self, loop, event): pass
    def on_checkpoint(self, loop, event): pass
    def on_stop(self, loop, event): pass

    def on_train_end(self, loop, step):
        Path(loop.run_dir, self.file).write_text(json.dumps({"steps": self.steps, "last": step}))
'''


def test_a_plugin_adds_a_callback_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dist(tmp_path / "site", "rk-callback", "0.1", {"restorekit.callbacks": {"step_counter": "rkt_cb:StepCounter"}},
               {"rkt_cb.py": PLUGIN})  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    refresh_plugins()
    try:
        rec = recipe(tmp_path / "run", iterations=5, callbacks=[{"type": "step_counter", "file": "count.json"}])
        result = train(rec, stream=engine_fakes.FakeStream(4))
    finally:
        refresh_plugins()
    assert json.loads((result.run_dir / "count.json").read_text()) == {"steps": 5, "last": 5}
