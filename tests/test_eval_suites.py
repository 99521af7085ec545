"""Named evaluation suites: eval.suites in a recipe and `restorekit eval RECIPE --suite NAME`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from restorekit.cli import main
from restorekit.engine.config import eval_config
from restorekit.engine.evaluate import suite_data
from restorekit.errors import RecipeError
from restorekit.recipes import load_recipe

SMALL = ["-o", "model.dim=8", "-o", "model.heads=[1,1,2,2]"]
for _section, _task in [("data.val", "noise"), ("eval.suites.unseen", "noise_75"), ("eval.suites.unseen", "rain_dense"),
                        ("eval.suites.unseen", "haze_thick")]:  # fmt: skip
    SMALL += ["-o", f"{_section}.{_task}.dataset.max_size=40"]


@pytest.mark.parametrize(
    ("suites", "message"),
    [(3, "eval.suites must map suite names"), ({"unseen": {}}, "eval.suites.unseen must map task names"),
     ({"unseen": ["noise"]}, "eval.suites.unseen must map task names")],
)  # fmt: skip
def test_malformed_suites_name_the_key(suites, message) -> None:
    with pytest.raises(RecipeError, match=message):
        eval_config({"eval": {"suites": suites}}, "r.yaml")


def test_a_suite_replaces_data_val_and_an_unknown_one_lists_the_known() -> None:
    recipe = load_recipe("dino_ir")
    cfg = eval_config(recipe, "dino_ir")
    data = suite_data(recipe["data"], cfg, "unseen", "dino_ir")
    assert data["val"]["derain_rain100h"]["dataset"]["path"] == "derain/test_rain100h"
    assert data["train"] == recipe["data"]["train"] and "denoise_15" not in data["val"]
    assert recipe["data"]["val"] == load_recipe("dino_ir")["data"]["val"]  # the recipe is left as it was
    with pytest.raises(RecipeError, match=r"no evaluation suite 'unsen' in eval.suites \(known: unseen\)"):
        suite_data(recipe["data"], cfg, "unsen", "dino_ir")


def test_cli_eval_suite_scores_what_data_val_with_the_same_entry_scores(tmp_path: Path, capsys) -> None:
    """noise_75 through --suite equals data.val's noise entry set to sigma 75 (the pre-existing route)."""
    from safetensors.torch import save_file

    from restorekit import build_model

    torch.manual_seed(0)
    overrides = [SMALL[i + 1] for i in range(0, len(SMALL), 2)]
    model = build_model(load_recipe("demo/restormer_tiny", overrides)["model"])
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    common = ["eval", "demo/restormer_tiny", *SMALL, "--weights", str(weights), "--device", "cpu"]
    assert main([*common, "--suite", "unseen", "--report", str(tmp_path / "unseen")]) == 0
    out = capsys.readouterr().out
    assert "suite unseen" in out and "| noise_75 | 3 |" in out
    unseen = json.loads((tmp_path / "unseen" / "eval.json").read_text())
    assert set(unseen["tasks"]) == {"noise_75", "rain_dense", "haze_thick"}
    assert unseen["protocol"]["suite"] == "unseen"
    argv = [*common, "-o", "data.val.noise.dataset.degradation.sigma=75", "--report", str(tmp_path / "val")]
    assert main(argv) == 0
    plain = json.loads((tmp_path / "val" / "eval.json").read_text())
    for key in ("psnr_in", "psnr", "ssim"):
        assert unseen["tasks"]["noise_75"][key] == pytest.approx(plain["tasks"]["noise"][key], abs=1e-9)
    assert unseen["tasks"]["noise_75"]["psnr_in"] < 15  # sigma 75 is heavy
    assert main([*common, "--suite", "nope"]) != 0
    assert "no evaluation suite 'nope'" in capsys.readouterr().err
