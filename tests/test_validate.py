"""One validation pass: every problem of a recipe in one RecipeError, and ``restorekit check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from restorekit.cli import main
from restorekit.data.build import build_eval_sets
from restorekit.engine.config import train_config
from restorekit.engine.validate import find_problems, validate
from restorekit.errors import RecipeError, RestorekitError
from restorekit.published import check_published
from restorekit.recipes import apply_overrides, load_recipe, recipe_locations, resolve_recipe
from restorekit.registry import SCHEDULES, registry


class Stateless:
    """A schedule that forgets ``state_dict``: it breaks the schedule contract."""

    def __init__(self, lr: float, iterations: int) -> None:
        self.lr = lr

    def __call__(self, step: int) -> float:
        return self.lr


@pytest.fixture
def stateless_schedule():
    SCHEDULES.register("rk_test_stateless", Stateless)
    yield
    SCHEDULES.unregister("rk_test_stateless")


def _gone(tmp: Path) -> dict[str, Any]:
    return {"data.val": {"gone": {"dataset": {"type": "paired_folder", "path": str(tmp / "gone")}}}}


# Five independent mistakes: (override, what validate must say, the first-problem validator alone).
MISTAKES = {
    "unknown key": (
        lambda tmp: {"train.iteratons": 10},
        "unknown key train.iteratons; did you mean 'iterations'",
        lambda recipe: train_config(recipe, "r"),
    ),
    "wrong type": (
        lambda tmp: {"train.batch_size": "four"},
        "train.batch_size must be an integer, got 'four'",
        lambda recipe: train_config(recipe, "r"),
    ),
    "contract": (
        lambda tmp: {"train.schedule": "rk_test_stateless"},
        "train.schedule: schedule: Stateless does not keep the schedule contract (missing: state_dict;",
        lambda recipe: train_config(recipe, "r"),
    ),
    "data folder": (
        _gone,
        "data.val.gone: paired_folder",
        lambda recipe: build_eval_sets(recipe["data"]),
    ),
    "published": (
        lambda tmp: {"published": {"Paper": {"citation": "Paper 2024, Table 1", "tasks": {"noise": {"psnr": "high"}}}}},
        "published.Paper.tasks.noise.psnr must be a number, got 'high'",
        lambda recipe: check_published(recipe["published"], "r"),
    ),
}

FIVE_MISTAKES = """\
base: demo/restormer_tiny
train:
  iteratons: 10
  batch_size: four
  schedule: rk_test_stateless
data:
  val:
    gone: {{dataset: {{type: paired_folder, path: {gone}}}}}
published:
  Paper:
    citation: "Paper 2024, Table 1"
    tasks:
      noise: {{psnr: high}}
"""


@pytest.fixture
def five_mistakes(tmp_path: Path, stateless_schedule: None) -> Path:
    path = tmp_path / "five.yaml"
    path.write_text(FIVE_MISTAKES.format(gone=tmp_path / "gone"))
    return path


def test_a_clean_recipe_passes() -> None:
    validate(load_recipe("demo/restormer_tiny"), "demo/restormer_tiny")
    assert not find_problems(load_recipe("demo/dino_ir_tiny")).found


def test_five_independent_mistakes_are_all_reported_with_file_and_line(five_mistakes: Path) -> None:
    recipe = resolve_recipe(five_mistakes)  # load_recipe would stop at the bad published entry
    with pytest.raises(RecipeError) as err:
        validate(recipe, str(five_mistakes), locations=recipe_locations(five_mistakes))
    message = str(err.value)
    lines = message.splitlines()
    assert lines[0] == f"{five_mistakes}: 5 problems:"
    assert [line.split(".")[0].strip() for line in lines[1:]] == ["1", "2", "3", "4", "5"]
    for _, expected, _ in MISTAKES.values():
        assert sum(expected in line for line in lines[1:]) == 1, expected
    # Each line names the file:line of its key (the YAML above, counted by hand).
    where = {"iteratons": 3, "batch_size": 4, "Stateless": 5, "data.val.gone": 8, "psnr": 13}
    for word, line in where.items():
        assert any(word in text and text.endswith(f"({five_mistakes}:{line})") for text in lines[1:]), word


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_single_mistake_reads_as_before(case: str, tmp_path: Path, stateless_schedule: None) -> None:
    overlay, expected, first_problem_validator = MISTAKES[case]
    recipe = apply_overrides(load_recipe("demo/restormer_tiny"), overlay(tmp_path))
    with pytest.raises(RestorekitError) as before:
        first_problem_validator(recipe)
    with pytest.raises(RecipeError) as now:
        validate(recipe, "r")
    assert expected in str(before.value)
    assert str(now.value) == str(before.value)  # one problem: the validator's own words, unnumbered


def test_an_unknown_top_level_key_and_a_bad_data_key_are_both_reported() -> None:
    recipe = {**load_recipe("demo/restormer_tiny"), "trian": {}}
    recipe["data"] = {**recipe["data"], "patch_size": 0}
    messages = [p.message for p in find_problems(recipe, "r").found]
    assert messages == [
        "r: unknown top-level key 'trian'; did you mean 'train'? "
        "(known: name, description, model, loss, data, train, eval, published)",
        "data.patch_size must be an integer >= 1, got 0",
    ]


def test_eval_checks_skip_the_train_section_and_training_data(tmp_path: Path) -> None:
    recipe = apply_overrides(load_recipe("demo/restormer_tiny"), {"train.lr": -1.0})
    recipe["data"]["train"] = {"gone": {"dataset": {"type": "paired_folder", "path": str(tmp_path / "gone")}}}
    assert len(find_problems(recipe, "r").found) == 2
    assert not find_problems(recipe, "r", train=False, data=("val",)).found


def test_restorekit_check_lists_every_problem_and_exits_1(five_mistakes: Path, capsys: Any) -> None:
    assert main(["check", str(five_mistakes)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{five_mistakes}: 5 problems:")
    assert all(expected in out for _, expected, _ in MISTAKES.values())


def test_restorekit_check_says_ok_for_a_clean_recipe(capsys: Any) -> None:
    assert main(["check", "demo/restormer_tiny", "-o", "train.iterations=5"]) == 0
    assert capsys.readouterr().out.startswith("ok: demo/restormer_tiny: no problems")
    assert main(["check", "demo/restormer_tiny", "-o", "train.lr=0", "-o", "eval.tile=4"]) == 1
    out = capsys.readouterr().out
    assert "1. train.lr must be > 0, got 0.0 (-o train.lr)" in out  # recipe order: train before eval
    assert "2. eval.tile (4) is too small for eval.overlap (32) (-o eval.tile)" in out


def test_train_validates_the_whole_recipe_before_it_starts(tmp_path: Path, capsys: Any) -> None:
    out_dir = tmp_path / "run"
    code = main(["train", "demo/restormer_tiny", "-o", "train.lr=0", "-o", "train.keep_last=0",
                 "-o", f"train.out_dir={out_dir}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "2 problems" in err and "train.lr must be > 0" in err and "train.keep_last must be >= 1" in err
    assert not out_dir.exists()  # nothing started


def test_a_callback_and_a_metric_that_break_their_contracts_are_both_found() -> None:
    """build() checks each part once; validate builds the cheap ones (callbacks, metrics) to find them."""

    class Deaf:
        def on_step(self, loop: Any, event: Any) -> None: ...

    def directionless(pred: Any, target: Any, crop_border: int = 0) -> Any:
        return pred

    registry("callback").register("rk_test_deaf", Deaf)
    registry("metric").register("rk_test_directionless", directionless)
    try:
        recipe = apply_overrides(load_recipe("demo/restormer_tiny"), {
            "train.callbacks": ["rk_test_deaf"], "eval.metrics": ["psnr", "rk_test_directionless"]})  # fmt: skip
        messages = [p.message for p in find_problems(recipe, "r").found]
    finally:
        registry("callback").unregister("rk_test_deaf")
        registry("metric").unregister("rk_test_directionless")
    assert len(messages) == 2
    assert messages[0].startswith(
        "r: eval.metrics[1]: metric: function does not keep the metric contract (missing: higher_is_better;"
    )
    assert messages[1].startswith("callback: Deaf does not keep the callback contract (missing: on_checkpoint,")
