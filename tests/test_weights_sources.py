"""`--weights` everywhere: released Restormer .pth and PromptIR .ckpt, restorekit files, the
model's own weights, Hub ids offline, and `train --weights` to start from weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tiny_dino_ir import tiny_model_spec

from restorekit.cli import main
from restorekit.engine.loading import load_model_for_inference
from restorekit.engine.sources import resolve_source
from restorekit.errors import CheckpointError, RecipeError
from restorekit.io.image_files import load_image, write_image
from restorekit.recipes import load_recipe
from restorekit.tiny import TINY


def body(name: str, seed: int) -> torch.nn.Module:
    from restorekit import build_model

    torch.manual_seed(seed)
    return build_model({"type": name, **TINY["model"][name]}).eval()


def recipe_file(tmp_path: Path, model: dict, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "model": model}), encoding="utf-8")
    return path


def released_file(tmp_path: Path, name: str, source: torch.nn.Module) -> Path:
    """The layouts the official code saves: BasicSR's {'params'} .pth, Lightning's {'state_dict': net.*} .ckpt."""
    state = {k: v.clone() for k, v in source.state_dict().items()}
    if name == "restormer":
        path, payload = tmp_path / "motion_deblurring.pth", {"params": state}
    else:
        unused = {"net.chnl_reduce1.weight": torch.randn(4, 4, 1, 1)}  # saved by PromptIR, never used
        path = tmp_path / "promptir.ckpt"
        payload = {"state_dict": {**{f"net.{k}": v for k, v in state.items()}, **unused,
                                  "loss_fn.dummy": torch.zeros(1)},
                   "epoch": 120, "global_step": 5}  # fmt: skip
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("name", ["restormer", "promptir"])
def test_released_files_restore_from_the_cli(tmp_path: Path, name: str) -> None:
    source = body(name, seed=0)
    weights = released_file(tmp_path, name, source)
    recipe = recipe_file(tmp_path, {"type": name, **TINY["model"][name]})
    image = torch.rand(3, 21, 30)
    write_image(tmp_path / "in.png", image)
    code = main(
        [
            "restore",
            str(tmp_path / "in.png"),
            str(tmp_path / "out.png"),
            "--recipe",
            str(recipe),
            "--weights",
            str(weights),
        ]
    )
    assert code == 0
    with torch.no_grad():
        expected = source(load_image(tmp_path / "in.png").rgb[None]).clamp(0, 1)[0]
    restored = load_image(tmp_path / "out.png").rgb
    assert (restored - expected).abs().max() <= 1 / 255 + 1e-6  # 8-bit output of the same restoration


def test_the_models_own_weights_need_no_weights_flag(tmp_path: Path) -> None:
    source = body("promptir", seed=0)
    weights = released_file(tmp_path, "promptir", source)
    recipe = load_recipe(
        recipe_file(tmp_path, {"type": "promptir", **TINY["model"]["promptir"]}), [f"model.weights={weights}"]
    )
    model, file, _ = load_model_for_inference(recipe, None)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    assert file == Path(str(weights))
    with pytest.raises(RecipeError, match="no weights: pass --weights W, or set the model's own weights"):
        load_model_for_inference(load_recipe(recipe_file(tmp_path, {"type": "promptir"}, "bare")), None)


def test_released_body_file_into_a_guided_model_says_where_it_goes(tmp_path: Path) -> None:
    weights = released_file(tmp_path, "restormer", body("restormer", seed=0))
    recipe = {"model": tiny_model_spec({"type": "dino_ir"})}
    with pytest.raises(CheckpointError, match="does not fit DinoIR.*set model.body.weights=FILE"):
        load_model_for_inference(recipe, weights)


def test_released_weights_holding_nan_are_refused(tmp_path: Path) -> None:
    source = body("promptir", seed=0)
    with torch.no_grad():
        source.patch_embed.proj.weight[0, 0, 0, 0] = float("inf")
    weights = released_file(tmp_path, "promptir", source)
    with pytest.raises(
        CheckpointError,
        match=r"promptir.ckpt holds NaN or infinite values in 1 tensor\(s\): "
        r"patch_embed.proj.weight",
    ):
        load_model_for_inference({"model": {"type": "promptir", **TINY["model"]["promptir"]}}, weights)


def test_a_restorekit_file_that_does_not_fit_names_file_and_keys(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(1)}, str(path), metadata={"format": "restorekit"})
    assert resolve_source(path).kind == "file"
    with pytest.raises(CheckpointError, match=r"other.safetensors.*missing key.*unexpected key.*conv.weight"):
        load_model_for_inference({"model": {"type": "restormer", **TINY["model"]["restormer"]}}, path)


def test_hub_id_offline_is_a_clear_error_saying_how_to_pass_a_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CheckpointError,
        match=r"HF_HUB_OFFLINE is set.*huggingface-cli download someone/dino-ir "
        r"--local-dir DIR.*--weights DIR",
    ):
        resolve_source("someone/dino-ir")
    with pytest.raises(CheckpointError, match="no such file or folder"):
        resolve_source(str(tmp_path / "missing.pth"))


def test_train_weights_start_from_released_weights(tmp_path: Path) -> None:
    from restorekit.engine.config import train_config
    from restorekit.engine.parts import build_training_parts

    source = body("restormer", seed=0)
    weights = released_file(tmp_path, "restormer", source)
    recipe = load_recipe(
        recipe_file(tmp_path, {"type": "restormer", **TINY["model"]["restormer"]}),
        ["train.iterations=2", "train.batch_size=1"],
    )
    recipe["train"]["init_weights"] = str(weights)
    parts = build_training_parts(recipe, train_config(recipe, "test"))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(parts.model.state_dict()[key], value, rtol=0, atol=0)
