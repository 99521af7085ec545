"""`restorekit init NAME --pairs DIR`: a recipe for your own pairs, its held-out split and its size.

Also the message of a task inherited from a base recipe whose folder is missing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from restorekit.cli import main
from restorekit.data.build import build_eval_sets, build_train_stream
from restorekit.data.split import held_out
from restorekit.engine.estimate import format_hours, size_iterations, wall_hours
from restorekit.errors import DataError
from restorekit.recipe_origins import data_task_origins, inherited_data_tasks
from restorekit.recipes import find_recipe, load_recipe

TINY_BASE = "demo/dino_ir_tiny"


def make_pairs(folder: Path, count: int) -> list[str]:
    names = [f"{i:03d}" for i in range(count)]
    for name in names:
        for sub, value in (("lq", 40), ("gt", 90)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 20), (value, 20, 60)).save(folder / sub / f"{name}.png")
    return names


def test_held_out_is_the_lowest_sha256_ranks_whatever_the_order():
    names = [f"img{i}" for i in range(20)]
    by_hand = sorted(sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:2])
    assert held_out(names, 0.1) == by_hand
    assert held_out(list(reversed(names)), 0.1) == by_hand
    assert len(held_out(names[:2], 0.1)) == 1  # at least one, never all
    with pytest.raises(DataError, match="at least 2 pairs"):
        held_out(["only"], 0.1)
    with pytest.raises(DataError, match="between 0 and 1"):
        held_out(names, 1.5)


def test_sizing_rule_and_time_by_hand():
    assert size_iterations(1000, 32, 200) == 6250  # ceil(200 * 1000 / 32)
    assert size_iterations(1080, 32, 200) == 6750  # docs/data.md's example: 1,200 pairs, 120 held out
    assert len(held_out([f"p{i}" for i in range(1200)], 0.1)) == 120
    assert size_iterations(11, 4, 200) == 1000  # 550 -> at least 1,000
    assert size_iterations(10_000, 8, 200, at_most=5000) == 5000
    assert wall_hours(5.4e16, 1) == pytest.approx(1.0)  # 5.4e16 / (15e12 * 3600)
    assert wall_hours(5.4e16, 4) == pytest.approx(0.25)
    assert wall_hours(5.4e16, 1, tflops_per_gpu=30.0) == pytest.approx(0.5)
    assert (format_hours(14.24), format_hours(0.5), format_hours(0.001)) == ("14.2 h", "30 min", "< 1 min")


def test_init_writes_a_recipe_that_replaces_the_protocol_data(tmp_path, capsys):
    names = make_pairs(tmp_path / "pairs", 12)
    out = tmp_path / "mine"
    args = ["init", "mine", "--pairs", str(tmp_path / "pairs"), "--task", "denoise", "--base", TINY_BASE]
    assert main(args + ["--out", str(out), "--no-dry-run"]) == 0
    printed = capsys.readouterr().out
    held = (out / "mine.heldout.txt").read_text().split()
    assert held == held_out(names, 0.1) and len(held) == 1
    recipe = load_recipe(out / "mine.yaml")
    assert list(recipe["data"]["train"]) == ["denoise"] and list(recipe["data"]["val"]) == ["denoise"]
    # 200 epochs x 11 pairs / batch 4 (the tiny base's) = 550 -> at least 1,000
    assert recipe["train"]["iterations"] == 1000 and recipe["train"]["schedule"]["warmup_iters"] == 100
    assert recipe["model"] == load_recipe(TINY_BASE)["model"]
    assert load_recipe(TINY_BASE)["eval"]["suites"] and recipe["eval"]["suites"] == {}  # the base's unseen sets dropped
    stream = build_train_stream(recipe["data"], batch_size=2, seed=0)
    assert len(stream.tasks[0].dataset) == 11
    val = build_eval_sets(recipe["data"])["denoise"]
    assert val.names == held
    assert "restorekit data check" in printed and "--dry-run" in printed and "torchrun" in printed
    before = (out / "mine.yaml").read_text()
    assert main(args + ["--out", str(out), "--no-dry-run"]) == 2  # nothing overwritten
    assert "mine.yaml exists; pick another NAME or --out" in capsys.readouterr().err
    assert (out / "mine.yaml").read_text() == before


def test_init_says_the_expected_time_from_the_dry_run(tmp_path, capsys):
    make_pairs(tmp_path / "pairs", 4)
    args = ["init", "small", "--pairs", str(tmp_path / "pairs"), "--base", TINY_BASE, "--out", str(tmp_path)]
    assert main(args + ["--epochs", "10", "--batch", "2"]) == 0
    printed = capsys.readouterr().out
    assert "expected time (dry run: " in printed
    assert "on 1 GPU, " in printed and "on 8 GPUs" in printed and "still to be measured" in printed


def test_a_missing_inherited_task_names_its_base_and_the_replace_marker(tmp_path, capsys):
    make_pairs(tmp_path / "pairs", 3)
    recipe = tmp_path / "merged.yaml"
    recipe.write_text(
        "base: dino_ir\nname: merged\n"
        f"data:\n  root: {tmp_path / 'nowhere'}\n  train:\n"
        f"    mine: {{dataset: {{type: paired_folder, path: {tmp_path / 'pairs'}}}}}\n"
    )
    base = find_recipe("dino_ir")
    assert data_task_origins(recipe)["data.train.mine"] == recipe.resolve()
    assert inherited_data_tasks(recipe)["data.train.derain"] == base
    assert "data.train.mine" not in inherited_data_tasks(recipe)
    assert main(["data", "check", str(recipe), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    line = next(row for row in printed.splitlines() if row.strip().startswith("derain "))
    assert "derain train folder not found" in line
    assert f"this task comes from the base recipe {base}" in line and "write `_replace_: true` under data.train" in line
    with pytest.raises(DataError, match=r"if this task comes from a base recipe .*`_replace_: true` under data.train"):
        build_train_stream(load_recipe(recipe)["data"], batch_size=2, seed=0)


def test_replace_marker_in_a_child_resets_the_origins(tmp_path):
    recipe = tmp_path / "own.yaml"
    recipe.write_text("base: dino_ir\ndata:\n  val:\n    _replace_: true\n    mine: {dataset: samples}\n")
    origins = inherited_data_tasks(recipe)
    assert not any(key.startswith("data.val.") for key in origins)
    assert origins["data.train.dehaze"] == find_recipe("dino_ir")


def test_the_paired_folder_example_recipe_reads_a_folder_and_its_held_out_list(tmp_path):
    names = make_pairs(tmp_path / "my_pairs", 5)
    (tmp_path / "my_pairs/heldout.txt").write_text("# held out\n001\n004\n")
    recipe = load_recipe("examples/paired_folder", [f"data.root={tmp_path}"])
    assert list(recipe["data"]["train"]) == ["restore"] and recipe.get("published") is None
    assert load_recipe("dino_ir")["eval"]["suites"] and recipe["eval"]["suites"] == {}
    stream = build_train_stream(recipe["data"], batch_size=2, seed=0)
    assert stream.tasks[0].dataset.names == [n for n in names if n not in ("001", "004")]
    assert build_eval_sets(recipe["data"])["restore"].names == ["001", "004"]


def test_the_gpu_hours_table_of_the_docs_follows_its_formula():
    """Each row of docs/data.md's table: whole run = FLOPs/step x steps, hours = run / (15 TFLOP/s x GPUs)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text(encoding="utf-8")
    block = doc.split("<!-- gpu-hours:start -->", 1)[1].split("<!-- gpu-hours:end -->", 1)[0]
    rows = [line.split("|")[1:-1] for line in block.strip().splitlines()[2:] if line.startswith("| `")]
    units = {"TFLOP": 1e12, "PFLOP": 1e15, "EFLOP": 1e18}
    assert {r[0].strip() for r in rows} >= {"`dino_ir`", "`dino_ir_5task`"}
    for cells in rows:
        step, total = (float(c.split()[0]) * units[c.split()[1]] for c in (cells[3], cells[4]))
        steps = int(cells[2].replace(",", ""))
        assert total == pytest.approx(step * steps, rel=0.01)
        for gpus, cell in zip((1, 1, 4, 8), cells[5:9]):
            assert float(cell.split()[0]) == pytest.approx(total / (15e12 * gpus) / 3600, rel=0.01)


def test_training_names_the_base_of_a_missing_inherited_task(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(
        f"base: {TINY_BASE}\nname: base\n"
        "data:\n  train:\n    _replace_: true\n    derain: {dataset: {type: derain, split: train}}\n"
        "  val:\n    _replace_: true\n    v: {dataset: {type: samples, split: test, degradation: noise, max_size: 32}}\n"
    )
    child = tmp_path / "child.yaml"
    child.write_text(
        "base: base.yaml\nname: child\n"
        f"data:\n  root: {tmp_path / 'nowhere'}\n"
        "  train:\n    mine: {dataset: {type: samples, split: train, degradation: noise, max_size: 32}}\n"
    )
    args = ["train", str(child), "-o", "train.iterations=1", "-o", "train.schedule.warmup_iters=0"]
    args += ["-o", f"train.out_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "data.train.derain: derain train folder not found" in err
    assert f"this task comes from the base recipe {base}" in err and "`_replace_: true` under data.train" in err
