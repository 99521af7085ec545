"""Published numbers beside measured ones: the recipe key, its checks, and what `eval` prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from restorekit.errors import RecipeError
from restorekit.published import published_differences, published_tables
from restorekit.recipes import list_recipes, load_recipe

# PromptIR (NeurIPS 2023, arXiv 2306.13090), Table 1, all-in-one on three degradations.
PROMPTIR_TABLE_1 = {
    "dehaze": (30.58, 0.974), "derain": (36.37, 0.972),
    "denoise_15": (33.98, 0.933), "denoise_25": (31.31, 0.888), "denoise_50": (28.06, 0.799),
}  # fmt: skip


@pytest.mark.parametrize("name", ["dino_ir", "baselines/promptir", "baselines/restormer"])
def test_protocol_recipes_carry_promptirs_table_1(name: str) -> None:
    published = load_recipe(name)["published"]
    tasks = published["PromptIR"]["tasks"]
    assert {t: (s["psnr"], s["ssim"]) for t, s in tasks.items()} == PROMPTIR_TABLE_1
    assert "NeurIPS 2023" in published["PromptIR"]["citation"] and "Table 1" in published["PromptIR"]["citation"]
    assert set(published["AdaIR"]["tasks"]) == set(published["MoCE-IR"]["tasks"]) == set(PROMPTIR_TABLE_1)
    assert set(tasks) == set(load_recipe(name)["data"]["val"])  # named as the recipe's test tasks


def test_the_five_task_protocol_does_not_inherit_the_three_task_numbers() -> None:
    assert load_recipe("dino_ir_5task").get("published") is None


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_every_recipes_published_tasks_are_among_its_test_tasks(name: str) -> None:
    """A recipe built on two protocols (adair_5task: dino_ir_5task + adair) must not carry the other's numbers."""
    recipe = load_recipe(name)
    val = set((recipe.get("data") or {}).get("val") or {})
    for method, entry in (recipe.get("published") or {}).items():
        assert set(entry["tasks"]) <= val, f"{name}: published.{method} names tasks it does not test"


@pytest.mark.parametrize(
    ("override", "message"),
    [("published.X=3", "published.X must be a mapping"),
     ("published.PromptIR.tasks.derain.psnr=high", r"published.PromptIR.tasks.derain.psnr must be a number"),
     ("published.PromptIR.citation=''", "citation must name the paper"),
     ("published.PromptIR.table=1", r"unknown key\(s\) \['table'\]")],
)  # fmt: skip
def test_malformed_published_sections_name_the_key(override: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe("baselines/promptir", [override])


def test_tables_show_measured_published_and_the_difference() -> None:
    result = {
        "tasks": {
            "derain": {"images": 2, "psnr_in": 20.0, "psnr": 37.0, "ssim_in": 0.5, "ssim": 0.95},
            "other": {"images": 1, "psnr_in": 10.0, "psnr": 11.0, "ssim_in": 0.1, "ssim": 0.2},
        }
    }
    published = {"PromptIR": {"citation": "the paper", "tasks": {"derain": {"psnr": 36.37, "ssim": 0.972},
                                                                 "dehaze": {"psnr": 30.58}}},
                 "Elsewhere": {"citation": "x", "tasks": {"lowlight": {"psnr": 20.0}}}}  # fmt: skip
    directions = {"psnr": True, "ssim": True}
    text = published_tables(result, published, directions)
    assert "published: PromptIR (the paper)" in text
    assert "| derain | 37.00 | 36.37 | +0.63 | 0.9500 | 0.9720 | -0.0220 |" in text
    assert "dehaze" not in text and "Elsewhere" not in text  # nothing measured to compare with
    diffs = published_differences(result, published, directions)
    assert diffs["PromptIR"]["tasks"]["derain"]["psnr"]["difference"] == pytest.approx(0.63)
    assert list(diffs) == ["PromptIR"]


def test_eval_prints_published_beside_measured(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`restorekit eval` on a tiny run folder: the comparison is printed and written to the report."""
    import json

    import torch
    from safetensors.torch import save_file

    from restorekit import build_model
    from restorekit.cli import main
    from restorekit.frozen import trainable_state_dict
    from restorekit.tiny import TINY

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {type: restormer, dim: 8, num_blocks: [1, 1, 1, 1], heads: [1, 1, 1, 1], num_refinement_blocks: 1}\n"
        "data:\n  val:\n    noise: {dataset: {type: samples, split: test, degradation: {type: noise, sigma: 25},"
        " max_size: 32}}\n"
        "published:\n  Paper: {citation: 'A. Author, 2024, Table 2', tasks: {noise: {psnr: 30.0}}}\n",
        encoding="utf-8")  # fmt: skip
    torch.manual_seed(0)
    model = build_model({"type": "restormer", **TINY["model"]["restormer"]})
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in trainable_state_dict(model).items()}, str(weights))
    code = main(
        ["eval", str(recipe), "--weights", str(weights), "--report", str(tmp_path / "rep"), "-o", "eval.max_images=1"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "published: Paper (A. Author, 2024, Table 2)" in out
    report = json.loads((tmp_path / "rep" / "eval.json").read_text())
    row = report["published"]["Paper"]["tasks"]["noise"]["psnr"]
    assert row["difference"] == pytest.approx(report["tasks"]["noise"]["psnr"] - 30.0)
    assert f"| noise | {report['tasks']['noise']['psnr']:.2f} | 30.00 | {row['difference']:+.2f} |" in out
    assert "published: Paper" in (tmp_path / "rep" / "eval.md").read_text()


def test_the_difference_is_signed_by_the_metrics_direction() -> None:
    """Positive means the measurement is better: measured - published for PSNR, published - measured for an error."""
    result = {"tasks": {"derain": {"images": 1, "psnr": 30.0, "mae": 0.05}}}
    published = {"Paper": {"citation": "the paper", "tasks": {"derain": {"psnr": 31.0, "mae": 0.07}}}}
    directions = {"psnr": True, "mae": False}
    diffs = published_differences(result, published, directions)["Paper"]["tasks"]["derain"]
    assert diffs["psnr"]["difference"] == pytest.approx(-1.0)  # 30 dB measured is 1 dB worse than 31
    assert diffs["mae"]["difference"] == pytest.approx(0.02)  # an error of 0.05 is 0.02 better than 0.07
    assert "| derain | 30.00 | 31.00 | -1.00 | 0.0500 | 0.0700 | +0.0200 |" in published_tables(
        result, published, directions
    )
    assert published_differences(result, published, {"psnr": True})["Paper"]["tasks"]["derain"].keys() == {"psnr"}
