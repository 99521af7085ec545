"""A model keeps the spec it was built from, and a released weights file is read once on its way in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import restorekit
from restorekit import build, build_model
from restorekit.building import package_loader, register_package_loader
from restorekit.engine.sources import load_source, resolve_source
from restorekit.errors import CheckpointError
from restorekit.pretrained import from_pretrained, save_pretrained


def outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model.eval()(x)


def test_build_keeps_the_spec_on_the_model_and_on_each_nested_part() -> None:
    spec = {"type": "restormer", "dim": 8, "num_blocks": [1, 1, 1, 1], "heads": [1, 1, 1, 1]}
    model = build("model", spec)
    assert model.spec == spec
    assert model.spec is not spec  # a copy: changing the caller's dict later does not rewrite history
    fusion = build("fusion", {"type": "concat", "out_channels": 4}, in_channels=6, num_layers=2)
    assert fusion.spec == {"type": "concat", "out_channels": 4, "in_channels": 6, "num_layers": 2}


def test_save_pretrained_of_a_built_model_needs_no_recipe(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model("demo/restormer_tiny")
    assert model.spec["type"] == "restormer" and model.spec["dim"] == 16  # the recipe's model section
    save_pretrained(model, tmp_path / "pkg")
    again = from_pretrained(tmp_path / "pkg")
    torch.testing.assert_close(outputs(again), outputs(model), rtol=0, atol=0)
    assert again.spec == model.spec


def test_save_pretrained_of_dino_ir_tiny_needs_no_recipe(tmp_path: Path) -> None:
    # Its DINOv2 backbone is frozen and random here; a package never copies a frozen part, it is
    # rebuilt under train.seed (0 by default), so the model is built under that seed as training does.
    torch.manual_seed(0)
    model = build_model("demo/dino_ir_tiny")
    save_pretrained(model, tmp_path / "pkg")
    again = from_pretrained(tmp_path / "pkg")
    torch.testing.assert_close(outputs(again), outputs(model), rtol=0, atol=0)


def test_a_model_without_a_spec_still_asks_for_the_recipe(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"carries no spec\); pass recipe="):
        save_pretrained(torch.nn.Conv2d(3, 3, 1), tmp_path / "pkg")


def test_build_model_hands_a_package_folder_to_the_registered_loader(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "pkg").mkdir()
    assert package_loader() is restorekit.from_pretrained  # the packaging layer's own, resolved by name
    seen = []
    monkeypatch.setattr("restorekit.building._package_loaders", [])
    register_package_loader(lambda source, **overrides: seen.append((str(source), overrides)) or "loaded")
    assert build_model(tmp_path / "pkg", dim=8) == "loaded"
    assert seen == [(str(tmp_path / "pkg"), {"dim": 8})]


def test_a_released_body_file_is_read_once(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(2)
    trained = build_model("demo/restormer_tiny")
    path = tmp_path / "restormer.pth"
    torch.save({"params": trained.state_dict()}, path)  # the official BasicSR layout
    torch.manual_seed(5)
    fresh = build_model("demo/restormer_tiny")
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    source = resolve_source(path)
    assert source.kind == "released"
    load_source(fresh, source)
    assert reads == [str(path)]
    torch.testing.assert_close(outputs(fresh), outputs(trained), rtol=0, atol=0)


def test_a_plain_state_dict_of_the_model_is_read_once(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(2)
    trained = build_model("demo/restormer_tiny")
    path = tmp_path / "plain.pth"
    torch.save(trained.state_dict(), path)
    fresh = build_model("demo/restormer_tiny")
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    load_source(fresh, resolve_source(path))
    assert reads == [str(path)]
    torch.testing.assert_close(outputs(fresh), outputs(trained), rtol=0, atol=0)
