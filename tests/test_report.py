"""restorekit report: run folders side by side (HTML + markdown), and the page in a real browser."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from browser import browser_page, keep_screenshot
from PIL import Image
from skimage import data

from restorekit.cli import main
from restorekit.engine.config import EvalConfig
from restorekit.engine.evaluate import protocol, write_report
from restorekit.engine.run_folder import METRICS_FILE, RECIPE_FILE, MetricsLog
from restorekit.recipes import dump_recipe, load_recipe
from restorekit.report.render import crop_box
from restorekit.report.runs import RunReadError, read_runs
from restorekit.report.svg import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, line_chart, nice_ticks

# What the two runs hold: losses per step, validation PSNR per step, final scores.
RUNS = {
    "base": {"lr": 2.0e-3, "loss": {1: 0.30, 2: 0.20, 4: 0.10}, "val": {2: 20.0, 4: 24.0}, "psnr": 24.0, "ssim": 0.80},
    "low_lr": {
        "lr": 1.0e-3,
        "loss": {1: 0.32, 2: 0.25, 4: 0.15},
        "val": {2: 19.0, 4: 22.0},
        "psnr": 22.0,
        "ssim": 0.75,
    },
}
PUBLISHED = {"PaperNet": {"citation": "A. Author, PaperNet, Table 1", "tasks": {"noise": {"psnr": 30.5}}}}


def restored_image(seed: int) -> np.ndarray:
    """A 40 x 56 RGB test output, different per run: part of scikit-image's astronaut with some noise."""
    photo = data.astronaut()[20:180:4, 40:264:4].astype(float)
    noise = np.random.default_rng(seed).normal(0, 6 * seed, photo.shape)
    return np.clip(photo + noise, 0, 255).round().astype(np.uint8)


def make_run(folder: Path, key: str, seed: int) -> Path:
    """A run folder as the engine writes one: recipe.yaml, metrics.jsonl, eval/eval.json, eval/outputs."""
    spec = RUNS[key]
    recipe = load_recipe("demo/restormer_tiny", [f"train.lr={spec['lr']}"])
    if key == "base":
        recipe["published"] = PUBLISHED
    folder.mkdir(parents=True)
    (folder / RECIPE_FILE).write_text(dump_recipe(recipe))
    log = MetricsLog(folder / METRICS_FILE)
    for step, loss in spec["loss"].items():
        log.write({"step": step, "loss": loss, "lr": spec["lr"]})
        if step in spec["val"]:
            row = {"images": 1, "psnr_in": 18.0, "psnr": spec["val"][step], "ssim_in": 0.5, "ssim": 0.7}
            log.write({"step": step, "event": "validation", "tasks": {"noise": row}, "mean": row})
    row = {"images": 1, "psnr_in": 18.0, "psnr": spec["psnr"], "ssim_in": 0.5, "ssim": spec["ssim"]}
    info = protocol(EvalConfig(), ema=True)
    write_report(folder / "eval", {"tasks": {"noise": row}, "mean": row}, info)
    out = folder / "eval" / "outputs" / "noise"
    out.mkdir(parents=True)
    Image.fromarray(restored_image(seed)).save(out / "photo.png")
    return folder


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    return [make_run(tmp_path / "base", "base", 1), make_run(tmp_path / "low_lr", "low_lr", 2)]


def test_nice_ticks_are_round_steps_covering_the_range():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(18.3, 24.1) == [20.0, 22.0, 24.0]
    assert nice_ticks(5.0, 5.0) == [5.0]


def test_line_chart_maps_data_onto_the_plot_box():
    svg = line_chart("t", {"a": [(0, 0.0), (10, 1.0)], "b": [(5, 0.5), (6, float("nan"))]}, "step", "loss")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    # x 0..10 over [LEFT, LEFT + plot_w]; y 0..1 upwards over [TOP + plot_h, TOP]; the NaN point is left out.
    assert f'points="{LEFT:.1f},{TOP + plot_h:.1f} {LEFT + plot_w:.1f},{TOP:.1f}"' in svg
    assert f'points="{LEFT + plot_w / 2:.1f},{TOP + plot_h / 2:.1f}"' in svg
    assert line_chart("empty", {"a": [(1, float("nan"))]}, "x", "y") == ""


def test_crop_box_is_the_centre_inside_every_image():
    assert crop_box([(56, 40)], 16) == (20, 12, 36, 28)
    assert crop_box([(56, 40), (50, 30)], 100) == (0, 0, 50, 30)


def test_report_tables_diff_and_twin(two_runs: list[Path], tmp_path: Path):
    html = tmp_path / "out" / "report.html"
    html.parent.mkdir()
    assert main(["report", *map(str, two_runs), "-o", str(html), "--crop", "16"]) == 0
    md = html.with_suffix(".md").read_text()
    # The diff is restorekit diff's: only the learning rate (and the published section) differ.
    assert "| train.lr | 0.002 | 0.001 |" in md
    assert "| published | {'PaperNet'" not in md and "published.PaperNet.citation" in md
    # Final scores side by side, the published number beside them.
    assert "| task | input | base | low_lr | PaperNet (published) |" in md
    assert "| noise | 18.00 | 24.00 | 22.00 | 30.50 |" in md
    assert "| noise | 0.5000 | 0.8000 | 0.7500 | - |" in md
    # Curves: last and best per run (loss lower is better, PSNR higher).
    assert "| base | 0.1000 (step 4) | 0.1000 (step 4) |" in md
    assert "| low_lr | 22.00 (step 4) | 22.00 (step 4) |" in md
    page = html.read_text()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert page.count("<svg") == 2 and page.count('class="series"') == 4
    # Refused without --overwrite, nothing replaced.
    before = html.read_bytes()
    assert main(["report", *map(str, two_runs), "-o", str(html)]) == 2
    assert html.read_bytes() == before
    assert main(["report", *map(str, two_runs), "-o", str(html), "--overwrite"]) == 0


def test_report_refuses_a_folder_that_is_no_run(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunReadError, match=r"empty: no recipe.yaml here"):
        read_runs([tmp_path / "empty"])
    assert not (tmp_path / "report.html").exists()


def test_report_of_runs_without_scores_shows_their_grids(tmp_path: Path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / RECIPE_FILE).write_text(dump_recipe(load_recipe("demo/restormer_tiny")))
    (bare / "eval").mkdir()
    grid = np.zeros((30, 1000, 3), np.uint8)
    grid[:, 500:] = 255
    Image.fromarray(grid).save(bare / "eval" / "grid.png")
    html = tmp_path / "r.html"
    assert main(["report", str(bare), "-o", str(html)]) == 0
    md = html.with_suffix(".md").read_text()
    assert "No run has a final evaluation (eval/eval.json)." in md
    assert "No training records (metrics.jsonl) in these runs." in md
    [uri] = re.findall(r"!\[bare\]\((data:image/png;base64,[^)]+)\)", md)
    shown = _decoded(uri)
    assert shown.shape == (22, 720, 3)  # wider than 720 px: scaled to 720, the aspect kept (30 * 720 / 1000 = 21.6)
    assert shown[:, :350].max() == 0 and shown[:, 370:].min() == 255


def _decoded(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_report_in_a_browser(two_runs: list[Path], tmp_path: Path):
    html = tmp_path / "report.html"
    assert main(["report", *map(str, two_runs), "-o", str(html), "--crop", "32"]) == 0
    with browser_page() as (page, errors):
        page.goto(html.as_uri())
        page.wait_for_selector("svg.curve polyline.series")
        cells = page.locator("table.scores").first.locator("tbody tr").first.locator("td").all_inner_texts()
        assert cells == ["noise", "18.00", "24.00", "22.00", "30.50"]
        # The page marks the best run per row (PSNR: higher is better).
        assert page.locator("table.scores").first.locator("td.best").all_inner_texts() == ["24.00"]
        assert page.locator("svg.curve").count() == 2
        assert page.locator("svg.curve polyline.series").count() == 4
        box = page.locator("svg.curve").first.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50
        crops = page.locator("img.crop")
        assert crops.count() == 2
        for index, seed in enumerate((1, 2)):
            crop = crops.nth(index)
            assert crop.evaluate("img => img.complete && img.naturalWidth") == 32
            expected = restored_image(seed)[4:36, 12:44]  # the centre 32 x 32 of 56 x 40, by hand
            np.testing.assert_array_equal(_decoded(crop.get_attribute("src")), expected)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert errors == []
    keep_screenshot(tmp_path / "report.png", "report.png")
