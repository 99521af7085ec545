"""Fault suite, bad inputs: wrong value types, bad arguments, unreadable and tiny images,
files that would be overwritten, file modes (docs/reliability.md lists what each covers)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional

import engine_fakes
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from plugin_dists import write_dist

from restorekit.building import build
from restorekit.cli import main
from restorekit.errors import BuildError, RecipeError
from restorekit.value_types import fits, type_mismatches

SRC = Path(__file__).resolve().parents[1] / "src"
engine_fakes.register()


# -- 11: a wrong value type names the key, the expected and the given type -------------
def test_a_wrong_value_type_is_an_error_naming_key_expected_and_given_type() -> None:
    with pytest.raises(BuildError) as info:
        build("body", {"type": "restormer", "dim": "sixteen"})
    assert str(info.value) == "body 'restormer': wrong value type for dim: expected int, got str ('sixteen')"
    with pytest.raises(BuildError, match=r"num_blocks: expected list of int, got list \(\[1, 'x'\]\)"):
        build("body", {"type": "restormer", "num_blocks": [1, "x"]})


def test_the_command_line_reports_a_wrong_value_type_without_a_traceback(capsys: pytest.CaptureFixture) -> None:
    code = main(["show", "demo/restormer_tiny", "-o", "model.dim=sixteen", "--params"])
    err = capsys.readouterr().err
    assert code == 2 and "dim: expected int, got str ('sixteen')" in err and "Traceback" not in err


def _factory(
    count: int,
    rate: float,
    name: str,
    flag: bool,
    sizes: Sequence[int],
    pair: tuple[int, int],
    knobs: Mapping[str, float],
    mode: Literal["a", "b"],
    maybe: Optional[int],
    spec: Any,
    loose: int = None,
) -> None:  # type: ignore[assignment]
    """Annotations as parts write them (``loose`` is annotated int but defaults to None)."""


GOOD = {
    "count": 3,
    "rate": 2,
    "name": "x",
    "flag": True,
    "sizes": [1, 2],
    "pair": [1, 2],
    "knobs": {"a": 1.5},
    "mode": "b",
    "maybe": None,
    "spec": {"type": "anything"},
    "loose": None,
}


def test_valid_values_pass_and_each_clear_mismatch_is_named() -> None:
    assert type_mismatches(_factory, GOOD) == []
    bad = {
        "count": "3",
        "rate": "fast",
        "name": 1,
        "flag": "yes",
        "sizes": "12",
        "pair": [1, 2, 3],
        "knobs": {"a": "b"},
        "mode": "c",
        "maybe": 1.5,
    }
    assert [p.split(":")[0] for p in type_mismatches(_factory, bad)] == list(bad)
    assert type_mismatches(_factory, {"count": True}) == ["count: expected int, got bool (True)"]


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(),
        st.lists(st.integers()),
        st.dictionaries(st.text(), st.integers()),
    )
)
def test_any_and_unknown_classes_accept_every_value(value: Any) -> None:
    assert fits(value, Any) is True
    assert fits(value, BuildError) in (True, None)  # a class a spec may stand for: never a clear mismatch


# -- 12: --tile errors name --tile ------------------------------------------------------
def test_a_negative_tile_is_reported_as_a_tile_error(tmp_path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        ["restore", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--weights", str(tmp_path), "--tile", "-5"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--tile must be >= 0" in err and "--overlap" not in err


# -- 8, 9: plugin isolation holds against sys.exit(); recipe plugins are never imported ---
def _cli(*args: str, path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{SRC}"}
    env.pop("RESTOREKIT_DISABLE_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "restorekit", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_plugin_calling_sys_exit_at_import_is_contained(plugin_path) -> None:
    from restorekit.errors import PartLoadError
    from restorekit.registry import registry

    write_dist(
        plugin_path,
        "rk-exits",
        "0.2",
        {"restorekit.losses": {"quits": "rkt_exits:Loss"}},
        {"rkt_exits.py": "import sys\nsys.exit(3)\n"},
    )
    with pytest.raises(PartLoadError, match=r"loss 'quits' from plugin rk-exits==0.2 .*SystemExit: 3"):
        build("loss", "quits")
    assert [e.name for e in registry("loss").check_all()] == ["quits"]
    check = _cli("plugins", "--check", path=plugin_path)
    assert check.returncode == 1 and "FAILED: SystemExit: 3" in check.stdout, check.stderr


def test_recipe_plugins_are_listed_without_import_and_a_missing_package_is_reported(plugin_path) -> None:
    from restorekit.recipe_plugins import recipe_plugins
    from restorekit.recipes import find_recipe, list_recipes

    write_dist(
        plugin_path,
        "rk-recipes",
        "1.0",
        {"restorekit.recipes": {"mine": "rkt_recipes.recipes"}},
        {
            "rkt_recipes/__init__.py": "raise SystemExit('imported!')\n",
            "rkt_recipes/recipes/__init__.py": "",
            "rkt_recipes/recipes/plugged.yaml": "name: plugged\nmodel: {type: restormer}\n",
        },
    )
    write_dist(plugin_path, "rk-gone", "0.1", {"restorekit.recipes": {"gone": "rkt_not_installed.recipes"}})
    assert list_recipes()["plugged"] == "rk-recipes==1.0"
    assert find_recipe("plugged") == (plugin_path / "rkt_recipes" / "recipes" / "plugged.yaml").resolve()
    assert "rkt_recipes" not in sys.modules
    broken = [p for p in recipe_plugins() if p.error]
    assert [(p.source, p.error) for p in broken] == [("rk-gone==0.1", "package 'rkt_not_installed' is not installed")]
    with pytest.raises(RecipeError, match="recipe plugins that failed: rk-gone==0.1"):
        find_recipe("nothing_like_it")
    check = _cli("plugins", "--check", path=plugin_path)
    assert check.returncode == 1 and "rk-gone==0.1" in check.stdout and "is not installed" in check.stdout
    listed = _cli("list", "recipes", path=plugin_path)
    assert listed.returncode == 0 and "plugged" in listed.stdout and "imported!" not in listed.stderr


# -- 6, 7: unreadable and too-small images ------------------------------------------------
def _bad_images(folder: Path) -> dict[str, Path]:
    """A good PNG and the three bad kinds: truncated, text named .png, empty."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(good)
    files = {
        "good": good,
        "truncated": folder / "truncated.png",
        "text": folder / "text.png",
        "empty": folder / "empty.png",
    }
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["text"].write_text("not an image\n")
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("truncated", "damaged or unsupported image data (OSError: image file is truncated"),
        ("text", "not an image: its content is no image format Pillow knows"),
        ("empty", "the file is empty (0 bytes)"),
    ],
)
def test_an_unreadable_image_is_an_error_naming_the_file_and_the_reason(tmp_path: Path, kind: str, reason: str) -> None:
    from restorekit.io.image_files import ImageReadError, load_image

    files = _bad_images(tmp_path)
    with pytest.raises(ImageReadError) as info:
        load_image(files[kind])
    assert str(info.value).startswith(f"{files[kind]}: {reason}")


def _paired_recipe(tmp_path: Path) -> Path:
    """A recipe whose train and val tasks read a folder with one good and three bad degraded images."""
    bad = _bad_images(tmp_path / "pairs" / "lq")
    (tmp_path / "pairs" / "gt").mkdir()
    for path in bad.values():
        shutil.copy(bad["good"], tmp_path / "pairs" / "gt" / path.name)
    recipe = tmp_path / "r.yaml"
    spec = f"{{dataset: {{type: paired_folder, path: {tmp_path / 'pairs'}}}}}"
    recipe.write_text(
        f"name: faulty\nmodel: {{type: engine_test_convnet}}\nloss: {{type: l1}}\n"
        f"data:\n  patch_size: 16\n  train:\n    pairs: {spec}\n  val:\n    pairs: {spec}\n"
    )
    return recipe


def test_data_check_decodes_every_image_and_reports_all_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = _paired_recipe(tmp_path)
    code = main(["data", "check", str(recipe), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "3 unreadable image(s)" in out, out
    for name in ("truncated", "text", "empty"):  # each once, although train and val both use it
        assert out.count(f"{tmp_path / 'pairs' / 'lq' / name}.png:") == 1
    assert "(used by data.train.pairs, data.val.pairs)" in out and "good.png" not in out


def test_eval_and_train_name_the_unreadable_file(tmp_path: Path) -> None:
    from restorekit.data.build import build_eval_sets, build_train_stream
    from restorekit.engine.config import EvalConfig
    from restorekit.engine.evaluate import evaluate
    from restorekit.io.image_files import ImageReadError
    from restorekit.recipes import load_yaml

    data = load_yaml(_paired_recipe(tmp_path))["data"]
    for name in ("text", "empty"):  # the truncated PNG is the one that used to go unnamed
        for side in ("lq", "gt"):
            (tmp_path / "pairs" / side / f"{name}.png").unlink()
    truncated = tmp_path / "pairs" / "lq" / "truncated.png"
    with pytest.raises(ImageReadError, match=f"{truncated}: damaged"):
        evaluate(torch.nn.Identity(), build_eval_sets(data), EvalConfig(crop_multiple=0), torch.device("cpu"))
    stream = build_train_stream(data, batch_size=8, seed=0)  # 8 draws from 2 pairs: the bad one comes up
    with pytest.raises(ImageReadError, match=f"{truncated}: damaged"):
        next(iter(stream.batches(0)))


@pytest.mark.parametrize("size", [(1, 1), (3, 5)])
def test_an_image_smaller_than_the_ssim_window_is_an_error_naming_it_and_its_size(size: tuple[int, int]) -> None:
    from restorekit.engine.config import EvalConfig
    from restorekit.engine.evaluate import evaluate
    from restorekit.errors import DataError

    tiny = [{"lq": torch.rand(3, *size), "gt": torch.rand(3, *size), "task": "noise", "name": "speck"}]
    with pytest.raises(
        DataError,
        match=rf"eval task 'noise', image 'speck' \({size[0]}x{size[1]}\): ssim: .*"
        r"smaller than the 7x7 window; remove the image, or leave that metric out",
    ):
        evaluate(torch.nn.Identity(), {"noise": tiny}, EvalConfig(crop_multiple=0), torch.device("cpu"))
    scores = evaluate(
        torch.nn.Identity(), {"noise": tiny}, EvalConfig(crop_multiple=0, metrics=["psnr"]), torch.device("cpu")
    )
    assert scores["tasks"]["noise"]["images"] == 1  # PSNR alone scores it


# -- 5, 10: nothing is overwritten without --overwrite; files follow the umask ------------
def test_eval_refuses_to_overwrite_a_report_or_saved_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report, saved = tmp_path / "report", tmp_path / "saved"
    report.mkdir()
    (report / "eval.md").write_text("earlier results\n")
    (saved / "noise").mkdir(parents=True)
    (saved / "noise" / "img0.png").write_bytes(b"earlier image")
    base = ["eval", "demo/restormer_tiny", "--weights", str(tmp_path / "no-weights-needed")]
    assert main([*base, "--report", str(report)]) == 2
    assert f"--report: {report / 'eval.md'} already exist(s); pass --overwrite" in capsys.readouterr().err
    assert main([*base, "--save-outputs", str(saved)]) == 2
    assert f"--save-outputs {saved} already holds 1 file(s)" in capsys.readouterr().err
    assert (report / "eval.md").read_text() == "earlier results\n"
    (report / "probe.csv").write_text("x\n")
    assert main(["probe", "--body", "restormer", "--out", str(report)]) == 2
    assert "--out: " in capsys.readouterr().err


def test_written_images_follow_the_umask(tmp_path: Path) -> None:
    from restorekit.engine.infer import restore_files
    from restorekit.io.image_files import write_image

    previous = os.umask(0o022)
    try:
        write_image(tmp_path / "a.png", torch.rand(3, 5, 5))
        write_image(tmp_path / "deep.png", torch.rand(3, 5, 5), bit_depth=16)
        restore_files(
            torch.nn.Identity(),
            [(tmp_path / "a.png", tmp_path / "out" / "b.png")],
            tile=None,
            overlap=0,
            device=torch.device("cpu"),
        )
        os.umask(0o027)
        write_image(tmp_path / "c.tif", torch.rand(3, 5, 5))
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*.*")}
    assert modes == {"a.png": 0o644, "deep.png": 0o644, "b.png": 0o644, "c.tif": 0o640}


# -- EXIF orientation: applied on read, outputs stored upright --------------------------------
def test_a_jpeg_tagged_rotate_90_is_read_and_restored_upright(tmp_path: Path) -> None:
    """Stored 128 wide x 96 high with orientation 6 ("rotate 90 clockwise to display"): it
    displays 96 wide x 128 high, and that is what is read, restored and written (untagged)."""
    from restorekit.engine.infer import restore_files
    from restorekit.io.image_files import load_image

    stored = np.zeros((96, 128, 3), np.uint8)
    stored[:16, :32] = (255, 0, 0)  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    with Image.open(tmp_path / "phone.jpg") as im:  # the decoded pixels as stored, untransposed
        raw = np.asarray(im.convert("RGB"))
    upright = np.rot90(raw, k=-1)  # 90 degrees clockwise, as a viewer displays it
    image = load_image(tmp_path / "phone.jpg")
    assert tuple(image.rgb.shape) == (3, 128, 96)
    assert torch.equal(image.rgb, torch.from_numpy(upright.copy()).permute(2, 0, 1).float() / 255)
    assert image.rgb[0, :32, -16:].mean() > 0.9  # the block is now top right
    restore_files(
        torch.nn.Identity(),
        [(tmp_path / "phone.jpg", tmp_path / "out.png"), (tmp_path / "phone.jpg", tmp_path / "out.jpg")],
        tile=None,
        overlap=0,
        device=torch.device("cpu"),
    )
    with Image.open(tmp_path / "out.png") as png:
        assert png.size == (96, 128) and np.array_equal(np.asarray(png), upright)
    with Image.open(tmp_path / "out.jpg") as jpg:
        assert jpg.size == (96, 128) and jpg.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_reads_as_pillow_displays_it(tmp_path: Path, orientation: int) -> None:
    from PIL import ImageOps

    from restorekit.io.image_files import load_image

    stored = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "tagged.png", exif=exif)
    with Image.open(tmp_path / "tagged.png") as im:
        shown = np.asarray(ImageOps.exif_transpose(im))  # Pillow's own reading of the tag
    read = (load_image(tmp_path / "tagged.png").rgb * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(read, shown)


# -- every output path is checked before any model work ---------------------------------------
@pytest.mark.parametrize("option", ["--report", "--save-outputs"])
def test_eval_refuses_a_file_where_its_folder_goes_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture, option: str
) -> None:
    taken = tmp_path / "results.txt"
    taken.write_text("earlier\n")
    base = ["eval", "demo/restormer_tiny", "--weights", str(tmp_path / "no-weights-needed")]
    for extra in ([], ["--overwrite"]):  # --overwrite replaces files in a folder, never a file by a folder
        assert main([*base, option, str(taken), *extra]) == 2
        assert f"error: {option} {taken}: is a file, not a folder" in capsys.readouterr().err
    assert main([*base, option, str(taken / "below")]) == 2
    assert f"error: {option} {taken / 'below'}: {taken} is a file, not a folder" in capsys.readouterr().err
    assert taken.read_text() == "earlier\n"


def test_package_of_a_run_without_checkpoints_names_the_run_argument(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: r\nmodel: {type: engine_test_convnet}\n")
    assert main(["package", str(run), str(tmp_path / "pkg")]) == 2
    err = capsys.readouterr().err
    assert f"error: RUN {run}: no checkpoints in {run / 'checkpoints'}" in err and "--weights" not in err
    assert not (tmp_path / "pkg").exists()
