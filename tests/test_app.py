"""restorekit app: restores through restore's own code path, scores with the project's metrics,
refuses undecodable files with a message, and works in a real browser."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import browser_page, keep_screenshot
from PIL import Image
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from restorekit import build_model, load_recipe
from restorekit.app.session import Session, load_models, slug
from restorekit.cli import main
from restorekit.engine.infer import ImageRestoreError
from restorekit.engine.restoring import RestoreOptions
from restorekit.errors import RecipeError
from restorekit.pretrained import save_pretrained

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # as restorekit app sets it, before gradio is imported


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Restormer package (random weights, seeded): what `restorekit package` writes."""
    recipe = load_recipe("demo/restormer_tiny")
    torch.manual_seed(0)
    model = build_model(recipe["model"])
    return save_pretrained(model, tmp_path_factory.mktemp("pkg") / "tiny", recipe=recipe)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """scikit-image's astronaut, 64 x 64, as a PNG."""
    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()[::8, ::8]).save(path)
    return path


def cli_restore(package: Path, source: Path, out: Path, *extra: str) -> bytes:
    assert main(["restore", str(source), str(out), "--weights", str(package), "--no-progress", *extra]) == 0
    return out.read_bytes()


def test_session_writes_what_restore_writes_and_scores_it(package: Path, photo: Path, tmp_path: Path):
    clean = tmp_path / "clean.png"
    target = np.clip(np.asarray(Image.open(photo)).astype(int) + 4, 0, 255).astype(np.uint8)
    Image.fromarray(target).save(clean)
    session = Session(load_models([RestoreOptions(weights=str(package))]), tmp_path / "work")
    options = {"tile": 48, "overlap": 16, "self_ensemble": True, "max_memory": None}
    seen: list[float] = []
    [result] = session.restore([photo], [str(package)], options, target=clean, on_progress=lambda f, _: seen.append(f))
    expected = cli_restore(package, photo, tmp_path / "cli.png", "--tile", "48", "--overlap", "16", "--self-ensemble")
    assert result.output.read_bytes() == expected
    assert seen[-1] == 1.0 and seen == sorted(seen)
    restored = np.asarray(Image.open(result.output))
    assert result.scores is not None
    assert result.scores["psnr"] == pytest.approx(peak_signal_noise_ratio(target, restored, data_range=255), abs=1e-6)
    assert result.scores["psnr_in"] == pytest.approx(
        peak_signal_noise_ratio(target, np.asarray(Image.open(photo)), data_range=255), abs=1e-6
    )


def test_session_compares_models_each_as_restore_writes_it(package: Path, photo: Path, tmp_path: Path):
    recipe = load_recipe("demo/restormer_tiny")
    torch.manual_seed(1)
    other = save_pretrained(build_model(recipe["model"]), tmp_path / "other", recipe=recipe)
    choices = [RestoreOptions(weights=str(package)), RestoreOptions(weights=str(other))]
    session = Session(load_models(choices), tmp_path / "work")
    results = session.restore([photo], [str(package), str(other)], {"tile": 0})
    assert [r.output.name for r in results] == [f"astronaut_{slug(str(w))}.png" for w in (package, other)]
    for result, weights in zip(results, (package, other)):
        assert result.output.read_bytes() == cli_restore(
            weights, photo, tmp_path / f"{weights.name}.png", "--tile", "0"
        )
    assert results[0].output.read_bytes() != results[1].output.read_bytes()
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(small)
    with pytest.raises(ImageRestoreError, match=r"TARGET small.png is 8x8 pixels but astronaut.png is 64x64"):
        session.restore([photo], [str(package)], {}, target=small)


def test_session_refuses_undecodable_files_before_writing(package: Path, tmp_path: Path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is no image")
    session = Session(load_models([RestoreOptions(weights=str(package))]), tmp_path / "work")
    with pytest.raises(ImageRestoreError, match=r"INPUT .*broken.png: cannot read it \(not an image"):
        session.restore([broken], [str(package)], {})
    with pytest.raises(RecipeError, match=r"--overlap \(40\) must be >= 0 and smaller than --tile \(32\)"):
        session.restore([broken], [str(package)], {"tile": 32, "overlap": 40})
    assert not any(p.is_file() for p in (tmp_path / "work").rglob("*"))


def test_app_command_needs_a_model():
    assert main(["app"]) == 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_app_in_a_browser(package: Path, photo: Path, tmp_path: Path):
    from restorekit.app.ui import build_app, launch

    noisy = tmp_path / "noisy.png"
    clean = np.asarray(Image.open(photo))
    noise = np.random.default_rng(0).normal(0, 12, clean.shape)
    Image.fromarray(np.clip(clean + noise, 0, 255).round().astype(np.uint8)).save(noisy)
    options = RestoreOptions(weights=str(package))
    workdir = tmp_path / "work"
    demo = build_app(Session(load_models([options]), workdir), options)
    _, url = launch(demo, host="127.0.0.1", port=free_port(), share=False, workdir=workdir, block=False)
    try:
        assert url.startswith("http://127.0.0.1:")
        with browser_page(viewport=(1100, 1000)) as (page, errors):
            page.goto(url)
            page.locator("#inputs input[type=file]").set_input_files(str(noisy))
            page.wait_for_selector("#inputs td[aria-label='noisy.png']")
            page.locator("#target input[type=file]").set_input_files(str(photo))
            page.wait_for_selector("#target td[aria-label='astronaut.png']")
            page.locator("#restore").click()
            link = page.locator("#downloads a[download]").first
            link.wait_for()
            page.wait_for_selector("#compare img")
            row = page.locator("#scores table tbody tr").first
            row.wait_for()
            with page.expect_download() as download:
                link.click()
            saved = tmp_path / "downloaded.png"
            download.value.save_as(saved)
            cells = row.locator("td").all_inner_texts()
            page.screenshot(path=str(tmp_path / "app.png"))
            # A file that is no image: a message on the page, no traceback.
            broken = tmp_path / "broken.png"
            broken.write_bytes(b"this is no image")
            page.locator("#inputs button[aria-label='Clear']").first.click()
            page.locator("#inputs input[type=file]").set_input_files(str(broken))
            page.wait_for_selector("#inputs td[aria-label='broken.png']")
            page.locator("#restore").click()
            page.wait_for_selector("text=cannot read it")
            assert errors == []
        assert saved.read_bytes() == cli_restore(package, noisy, tmp_path / "cli.png")
        restored, given = np.asarray(Image.open(saved)), np.asarray(Image.open(noisy))
        assert cells[0] == "noisy.png" and cells[1:3] == [
            f"{peak_signal_noise_ratio(clean, given, data_range=255):.2f}",
            f"{peak_signal_noise_ratio(clean, restored, data_range=255):.2f}",
        ]
        keep_screenshot(tmp_path / "app.png", "app.png")
    finally:
        demo.close()
