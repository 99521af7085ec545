"""PromptIR's and AdaIR's data trees read as they are (``data.layout``), on scaled-down copies.

The trees copy the repositories' folder names (``data/Train/<Task>``, ``test/`` or
``data/test/``) and their ``data_dir/*.txt`` lists, including the BSD400 spelling
``a<id>.jpg`` of ``denoise.txt`` (AdaIR issue #4) and a file present on disk but
absent from the list (left out, as their code leaves it out).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from PIL import Image

from restorekit.data.build import build_eval_sets, build_train_stream, check_data_config
from restorekit.errors import RecipeError
from restorekit.recipes import load_recipe


def img(path: Path, value: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 18), (value, 40, 200 - value)).save(path)


def write_list(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))  # PromptIR's lists end without a newline


def common_tree(root: Path, test_dir: Path) -> None:
    train = root / "data/Train"
    for name in ("00001.bmp", "00002.bmp", "117025.jpg", "unlisted.png"):
        img(train / "Denoise" / name)
    write_list(root / "data_dir/noisy/denoise.txt", ["00001.bmp", "00002.bmp", "a117025.jpg"])
    for i in (1, 2, 3):
        img(train / f"Derain/rainy/rain-{i}.png")
        img(train / f"Derain/gt/norain-{i}.png", 120)
    write_list(root / "data_dir/rainy/rainTrain.txt", ["rainy/rain-1.png", "rainy/rain-2.png"])
    for scene, part in (("0025", 1), ("3068", 2)):
        for beta in ("0.04", "0.2"):
            img(train / f"Dehaze/synthetic/part{part}/{scene}_0.8_{beta}.jpg")
        img(train / f"Dehaze/original/{scene}.jpg", 150)
    img(train / "Dehaze/synthetic/part1/0039_1_0.2.jpg")  # on disk, not in the list
    img(train / "Dehaze/original/0039.jpg")
    write_list(
        root / "data_dir/hazy/hazy_outside.txt",
        [f"synthetic/part{p}/{s}_0.8_{b}.jpg" for s, p in (("0025", 1), ("3068", 2)) for b in ("0.04", "0.2")],
    )
    for name in ("3096.jpg", "12084.jpg"):
        img(test_dir / "denoise/bsd68" / name)
    img(test_dir / "denoise/urban100/img_001.png")
    for i in (1, 2):
        img(test_dir / f"derain/Rain100L/input/{i}.png")
        img(test_dir / f"derain/Rain100L/target/{i}.png", 130)
    img(test_dir / "dehaze/input/0001_0.8_0.2.jpg")
    img(test_dir / "dehaze/target/0001.png", 160)


def promptir_tree(root: Path) -> Path:
    common_tree(root, root / "test")
    return root


def adair_tree(root: Path) -> Path:
    common_tree(root, root / "data/test")
    train = root / "data/Train"
    for name in ("GOPR0372_07_00_000047.png", "GOPR0372_07_00_000048.png"):
        img(train / "Deblur/blur" / name)
        img(train / "Deblur/sharp" / name, 140)
        img(root / "data/test/deblur/gopro/input" / name.replace("0372_07", "0384_11"))
        img(root / "data/test/deblur/gopro/target" / name.replace("0372_07", "0384_11"), 140)
    for name in ("2.png", "5.png"):
        img(train / "Enhance/low" / name, 10)
        img(train / "Enhance/gt" / name, 200)
    img(root / "data/test/enhance/lol/input/1.png", 10)
    img(root / "data/test/enhance/lol/target/1.png", 200)
    return root


def counts(data: dict) -> tuple[dict[str, int], dict[str, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every listed file is present: no warning
        stream = build_train_stream(data, batch_size=2, seed=0)
        evals = build_eval_sets(data)
    return {s.name: len(s.dataset) for s in stream.tasks}, {k: len(v) for k, v in evals.items()}


@pytest.mark.parametrize("layout", ["promptir", None])
def test_promptir_tree_works_as_it_is(tmp_path, layout):
    root = promptir_tree(tmp_path / "PromptIR")
    data = load_recipe("dino_ir")["data"] | {"root": str(root), "layout": layout, "num_workers": 0}
    assert check_data_config(data)["layout"] == "promptir"
    train, val = counts(data)
    # denoise.txt lists 3 of the 4 files (the BSD one as a117025.jpg); rainTrain.txt 2 of 3 pairs;
    # hazy_outside.txt 4 of the 5 hazy images
    assert train == {"denoise_15": 3, "denoise_25": 3, "denoise_50": 3, "derain": 2, "dehaze": 4}
    assert val == {"denoise_15": 2, "denoise_25": 2, "denoise_50": 2, "derain": 2, "dehaze": 1}


def test_adair_tree_works_as_it_is_for_five_tasks(tmp_path):
    root = adair_tree(tmp_path / "AdaIR")
    data = load_recipe("dino_ir_5task")["data"] | {"root": str(root), "num_workers": 0}
    assert check_data_config(data)["layout"] == "adair"
    train, val = counts(data)
    assert train == {
        "denoise_15": 3,
        "denoise_25": 3,
        "denoise_50": 3,
        "derain": 2,
        "dehaze": 4,
        "deblur": 2,
        "lowlight": 2,
    }
    assert val == {"denoise_25": 2, "derain": 2, "dehaze": 1, "deblur": 2, "lowlight": 1}


def test_layout_keeps_an_explicit_path_and_test_set(tmp_path):
    root = promptir_tree(tmp_path / "PromptIR")
    data = {
        "root": str(root),
        "layout": "promptir",
        "val": {
            "urban": {"dataset": {"type": "denoise", "split": "test", "sigma": 25, "test_set": "Urban100"}},
            "mine": {"dataset": {"type": "derain", "split": "test", "path": "test/derain/Rain100L"}},
        },
    }
    assert {k: len(v) for k, v in build_eval_sets(data).items()} == {"urban": 1, "mine": 2}


def test_a_listed_file_missing_on_disk_is_reported(tmp_path):
    root = promptir_tree(tmp_path / "PromptIR")
    (root / "data/Train/Derain/rainy/rain-2.png").unlink()
    data = {"root": str(root), "val": {"derain": {"dataset": {"type": "derain", "split": "train"}}}}
    with pytest.warns(
        UserWarning,
        match=r"derain train: 1 file\(s\) listed in data_dir/rainy/rainTrain.txt are not in the folder: rain-2.png",
    ):
        assert len(build_eval_sets(data)["derain"]) == 1


def test_restorekit_layout_is_the_default_and_unknown_layouts_are_named(tmp_path):
    assert check_data_config({"root": str(tmp_path)})["layout"] == "restorekit"
    with pytest.raises(RecipeError, match=r"data.layout must be one of restorekit, promptir, adair.*'promtir'"):
        check_data_config({"layout": "promtir"})
