"""Pretrained packages: save_pretrained / from_pretrained, the model card, frozen parts by sha256,
`restorekit package` and `push`, and Hub ids through a stand-in for the Hub client."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import engine_fakes
import pytest
import torch
from safetensors.torch import load_file, save_file

import restorekit
from restorekit.cli import main
from restorekit.engine.loading import load_model_for_inference, recipe_for_weights
from restorekit.errors import CheckpointError
from restorekit.tiny import tiny_model_spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny DINO-IR trained 2 steps, its frozen backbone loaded from a file, evaluated at the end."""
    from restorekit import build
    from restorekit.engine.train import train

    root = tmp_path_factory.mktemp("pretrained")
    spec = tiny_model_spec({"type": "dino_ir", "layers": [0, 1]})
    files = {}
    for seed in (0, 1):  # the backbone it trains with, and another one
        torch.manual_seed(seed)
        backbone = build("backbone", spec["backbone"])
        files[seed] = root / f"backbone{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in backbone.model.state_dict().items()}, str(files[seed]))
    spec["backbone"]["weights"] = str(files[0])
    recipe = {
        "name": "tiny_dino_ir", "description": "A tiny DINO-IR for the package tests.", "model": spec,
        "loss": {"type": "l1"}, "eval": {"after_train": True, "crop_multiple": 0},
        "train": {"iterations": 2, "batch_size": 2, "lr": 1e-3, "out_dir": str(root / "run"), "ckpt_every": 2,
                  "log_every": 1, "progress": False, "schedule": {"type": "constant"}},
        "published": {"Paper": {"citation": "Someone 2024, Table 1", "tasks": {"noise": {"psnr": 25.0}}}},
    }  # fmt: skip
    run = train(
        recipe,
        stream=engine_fakes.FakeStream(2, patch=16),
        eval_sets={"noise": engine_fakes.FakeEvalSet(count=1, size=24)},
    ).run_dir
    package = restorekit.save_pretrained(run, root / "package", license="apache-2.0")
    return {"run": run, "package": package, "backbone": files[0], "other_backbone": files[1], "root": root}


def outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model(x)


def test_package_holds_recipe_trainable_weights_card_and_records_the_frozen_backbone(trained) -> None:
    package = trained["package"]
    assert sorted(p.name for p in package.iterdir()) == [
        "README.md",
        "eval.json",
        "model.safetensors",
        "recipe.yaml",
        "restorekit.json",
    ]
    weights = load_file(str(package / "model.safetensors"))
    assert weights and not any(k.startswith("backbone.") for k in weights)  # never copied
    manifest = json.loads((package / "restorekit.json").read_text())
    record = manifest["frozen"]["backbone"]
    assert record["sha256"] == hashlib.sha256(trained["backbone"].read_bytes()).hexdigest()
    assert manifest["weights"]["ema"] is True and manifest["weights"]["step"] == 2
    card = (package / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: restorekit\n")
    assert "protocol: full image, metrics on RGB" in card and "| noise | 1 |" in card
    assert f"{manifest['params']['trainable']:,} trainable" in card and record["sha256"] in card
    assert "published: Paper (Someone 2024, Table 1)" in card
    assert "Multi-task Image Restoration Guided By Robust DINO Features" in card  # the architecture's citation
    assert "| train | noise |" not in card  # the stream was not a recipe dataset: no data rows invented


def test_from_pretrained_and_build_model_give_the_trained_model(trained) -> None:
    recipe = recipe_for_weights(trained["run"], None)
    reference, _, _ = load_model_for_inference(recipe, trained["run"])
    loaded = restorekit.from_pretrained(trained["package"])
    assert not loaded.training
    torch.testing.assert_close(outputs(loaded), outputs(reference), rtol=0, atol=0)
    torch.testing.assert_close(
        outputs(restorekit.build_model(str(trained["package"]))), outputs(reference), rtol=0, atol=0
    )
    again = restorekit.save_pretrained(loaded, trained["root"] / "again")  # a model remembers its recipe
    first, second = (load_file(str(p / "model.safetensors")) for p in (trained["package"], again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_frozen_backbone_is_checked_against_its_sha256(trained) -> None:
    with pytest.raises(
        CheckpointError,
        match=r"frozen part 'backbone' loaded .*backbone1.*sha256 .* but the "
        r"model was trained with .*backbone0",
    ):
        restorekit.from_pretrained(trained["package"], backbone={"weights": str(trained["other_backbone"])})
    with pytest.raises(
        CheckpointError,
        match=r"randomly initialised; pass the file: "
        r"from_pretrained\(\.\.\., backbone=\{'weights': PATH\}\)",
    ):
        restorekit.from_pretrained(trained["package"], backbone={"weights": None})
    moved = trained["root"] / "moved.safetensors"  # the same weights somewhere else are fine
    shutil.copy(trained["backbone"], moved)
    model = restorekit.from_pretrained(trained["package"], backbone={"weights": str(moved)})
    torch.testing.assert_close(outputs(model), outputs(restorekit.from_pretrained(trained["package"])))


def test_package_command_and_restore_from_a_package_folder(trained, tmp_path: Path) -> None:
    from restorekit.io.image_files import write_image

    target = tmp_path / "pkg"
    assert main(["package", str(trained["run"]), str(target), "--license", "mit", "--no-ema"]) == 0
    assert json.loads((target / "restorekit.json").read_text())["weights"]["ema"] is False
    assert main(["package", str(trained["run"]), str(target)]) == 2  # exists: refused without --overwrite
    write_image(tmp_path / "in.png", torch.rand(3, 18, 26))
    assert (
        main(["restore", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--weights", str(trained["package"])])
        == 0
    )  # no --recipe: the package has it
    assert (tmp_path / "out.png").is_file()


def test_training_starts_from_a_package(trained) -> None:
    from restorekit.engine.config import train_config
    from restorekit.engine.parts import build_training_parts
    from restorekit.recipes import load_recipe

    recipe = load_recipe(trained["package"] / "recipe.yaml", ["train.out_dir=null"])
    recipe["train"]["init_weights"] = str(trained["package"])
    model = build_training_parts(recipe, train_config(recipe, "test")).model
    packaged = load_file(str(trained["package"] / "model.safetensors"))
    for key, value in packaged.items():
        assert torch.equal(model.state_dict()[key], value), key


class FakeHubApi:
    """Stands in for huggingface_hub.HfApi at the network boundary: a dict of repositories."""

    def __init__(self, root: Path) -> None:
        self.root, self.created, self.uploads = root, [], []

    def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = False) -> Any:
        self.created.append((repo_id, private))
        return type("RepoUrl", (), {"url": f"https://hub.example/{repo_id}"})()

    def upload_folder(self, repo_id: str, folder_path: str, commit_message: str) -> None:
        self.uploads.append((repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)

    def snapshot_download(self, repo_id: str, revision: str | None = None, local_files_only: bool = False) -> str:
        if not (self.root / repo_id).is_dir():
            raise FileNotFoundError(f"404 Client Error: Repository Not Found for {repo_id}")
        return str(self.root / repo_id)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHubApi:
    import huggingface_hub.constants

    import restorekit.hub

    api = FakeHubApi(tmp_path / "hub")
    monkeypatch.setattr(restorekit.hub, "hub_api", lambda: api)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return api


def test_push_then_load_by_hub_id(trained, hub: FakeHubApi, capsys: pytest.CaptureFixture) -> None:
    assert main(["push", str(trained["run"]), "me/tiny-dino-ir", "--private", "--license", "mit"]) == 0
    assert "pushed to https://hub.example/me/tiny-dino-ir" in capsys.readouterr().out
    assert hub.created == [("me/tiny-dino-ir", True)]
    assert hub.uploads == [
        ("me/tiny-dino-ir", ["README.md", "eval.json", "model.safetensors", "recipe.yaml", "restorekit.json"])
    ]
    from_hub = restorekit.from_pretrained("me/tiny-dino-ir")
    torch.testing.assert_close(
        outputs(from_hub), outputs(restorekit.from_pretrained(trained["package"])), rtol=0, atol=0
    )
    model, _, _ = load_model_for_inference(recipe_for_weights("hf:me/tiny-dino-ir", None), "hf:me/tiny-dino-ir")
    torch.testing.assert_close(outputs(model), outputs(from_hub), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="could not download pretrained package 'me/missing'.*Not Found"):
        restorekit.from_pretrained("me/missing")


# -- package files: modes, sha256 of every weights file (docs/reliability.md) -------------------
def test_package_files_follow_the_umask_weights_included(trained, tmp_path: Path) -> None:
    import os
    import stat

    modes = {}
    for mask in (0o022, 0o027):
        previous = os.umask(mask)
        try:
            folder = restorekit.save_pretrained(trained["run"], tmp_path / f"pkg{mask:o}")
        finally:
            os.umask(previous)
        modes[mask] = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert set(modes[0o022].values()) == {0o644} and len(modes[0o022]) == 5
    assert set(modes[0o027].values()) == {0o640}


def _edited_copy(package: Path, target: Path) -> Path:
    """The package with one trainable tensor multiplied by 100 (its metadata kept)."""
    from safetensors import safe_open

    shutil.copytree(package, target)
    with safe_open(str(target / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(str(target / "model.safetensors"))
    first = sorted(state)[0]
    state[first] = state[first] * 100
    save_file(state, str(target / "model.safetensors"), metadata=metadata)
    return target


def test_edited_package_weights_are_refused_naming_the_file_unless_verification_is_off(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from safetensors.torch import load_file as load

    package = trained["package"]
    manifest = json.loads((package / "restorekit.json").read_text())
    assert manifest["weights_sha256"] == {
        "model.safetensors": hashlib.sha256((package / "model.safetensors").read_bytes()).hexdigest()
    }
    edited = _edited_copy(package, tmp_path / "edited")
    have = hashlib.sha256((edited / "model.safetensors").read_bytes()).hexdigest()
    expected = (
        f"package {edited}: model.safetensors has sha256 {have}, but restorekit.json records "
        f"{manifest['weights_sha256']['model.safetensors']}"
    )
    with pytest.raises(CheckpointError) as info:
        restorekit.from_pretrained(edited)
    assert str(info.value).startswith(expected) and "verify_weights=False (--no-verify-weights)" in str(info.value)
    with pytest.raises(CheckpointError, match="model.safetensors has sha256"):
        load_model_for_inference(recipe_for_weights(edited, None), edited)
    loaded = restorekit.from_pretrained(edited, verify_weights=False)  # edited on purpose: the user's call
    state = load(str(edited / "model.safetensors"))
    first = sorted(state)[0]
    assert torch.equal(dict(loaded.named_parameters())[first].detach(), state[first])
    from restorekit.io.image_files import write_image

    write_image(tmp_path / "in.png", torch.rand(3, 18, 26))
    args = ["restore", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--weights", str(edited)]
    assert main(args) == 2 and "model.safetensors has sha256" in capsys.readouterr().err
    assert main([*args, "--no-verify-weights"]) == 0 and (tmp_path / "out.png").is_file()


def test_a_manifest_without_weights_sha256_still_loads(trained, tmp_path: Path) -> None:
    """Packages written before the field existed load as before (nothing to check them against)."""
    old = _edited_copy(trained["package"], tmp_path / "old")
    manifest = json.loads((old / "restorekit.json").read_text())
    manifest.pop("weights_sha256", None)
    (old / "restorekit.json").write_text(json.dumps(manifest))
    assert not restorekit.from_pretrained(old).training


@pytest.mark.parametrize(
    ("model", "cited", "not_cited"),
    [
        ({"type": "dino_ir", "body": {"type": "adair"}}, ["lin2023dinoir", "cui2025adair"], ["zamir2022restormer"]),
        ({"type": "dino_ir", "body": {"type": "moce_ir"}}, ["lin2023dinoir", "zamfir2024complexityexperts"], []),
        ({"type": "dino_ir", "body": {"type": "restormer"}}, ["lin2023dinoir", "zamir2022restormer"], []),
        ({"type": "moce_ir_s"}, ["zamfir2024complexityexperts"], ["lin2023dinoir"]),
        ({"type": "adair"}, ["cui2025adair"], ["lin2023dinoir"]),
        ({"type": "promptir"}, ["potlapalli2023promptir"], ["lin2023dinoir"]),
    ],
)
def test_card_cites_the_model_and_the_body_it_guides(model, cited, not_cited) -> None:
    from restorekit.model_card import render_card

    card = render_card({"model_type": model["type"], "citation": "@misc{mine}"}, {"name": "x", "model": model}, None)
    citation = card.split("## Citation", 1)[1]
    assert citation.index("@misc{mine}") < min(citation.index(key) for key in cited)  # the packager's first
    for key in cited:
        assert f"{{{key}," in citation
    for key in not_cited:
        assert key not in citation
    if "cui2025adair" in cited:  # as AdaIR's README gives it
        assert "Ada{IR}: Adaptive All-in-One Image Restoration via Frequency Mining and Modulation" in citation
        assert "The Thirteenth International Conference on Learning Representations" in citation
    if "zamfir2024complexityexperts" in cited:  # as MoCE-IR's README gives it
        assert "Complexity Experts are Task-Discriminative Learners for Any Image Restoration" in citation
        assert "eprint={2411.18466}" in citation
