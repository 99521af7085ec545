"""The feature robustness probe: measurement, outputs, CLI and benchmark script."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit import probe
from restorekit.cli import main
from restorekit.errors import BuildError, RecipeError, RestorekitError

REPO = Path(__file__).resolve().parents[1]
TINY_DINOV2 = {
    "type": "dinov2",
    "size": "s",
    "img_size": 56,
    "model_kwargs": {"depth": 3, "embed_dim": 32, "num_heads": 2},
}
TINY_RESTORMER = {
    "type": "restormer",
    "dim": 8,
    "num_blocks": [1, 1, 1, 1],
    "heads": [1, 1, 1, 1],
    "num_refinement_blocks": 1,
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_images() -> list[tuple[str, torch.Tensor]]:
    return [(name, probe.load_probe_image(name, 56)) for name in ("astronaut", "coffee")]


def test_probe_on_two_images_writes_csv_and_png(tmp_path, two_images) -> None:
    degradations = probe.build_degradations(["identity", {"type": "noise", "sigma": 50}])
    result = probe.probe_spec("backbone", TINY_DINOV2, two_images, degradations, layers=[0, 2])
    assert result.values.shape == (2, 2, 2)
    np.testing.assert_allclose(result.values[:, 0, :], 1.0, atol=1e-6)  # identity: features unchanged
    assert (result.values[:, 1, :] < 0.999).all()  # sigma 50 moves them
    csv_path, png_path = probe.write_outputs([result], tmp_path)
    rows = read_rows(csv_path)
    assert len(rows) == 2 * 2 * 2 + 2 * 2  # per image, then the means
    means = {(r["degradation"], r["layer"]): float(r["cosine"]) for r in rows if r["image"] == "mean"}
    assert means[("identity", "0")] == pytest.approx(1.0, abs=1e-6)
    assert means[("noise sigma=50", "2")] == pytest.approx(result.values[:, 1, 1].mean(), abs=1e-6)
    assert png_path.read_bytes()[:8] == PNG_MAGIC
    assert "identity" in result.table() and "noise sigma=50" in result.table()
    assert any("randomly initialised" in note for note in result.notes)


def test_probe_is_reproducible(two_images) -> None:
    degradations = probe.build_degradations([{"type": "noise", "sigma": 25}, "rain"])
    features, layers, _ = probe.extractor_from_spec("backbone", TINY_DINOV2, layers=[1])
    runs = [probe.run_probe(features, layers, two_images[:1], degradations, seed=seed) for seed in (7, 7, 8)]
    np.testing.assert_allclose(runs[0].values, runs[1].values, rtol=0, atol=1e-6)
    assert not np.allclose(runs[0].values, runs[2].values, rtol=0, atol=1e-6)  # the seed matters


def test_body_encoder_probe(two_images) -> None:
    degradations = probe.build_degradations(["identity", "haze"])
    result = probe.probe_spec("body", TINY_RESTORMER, two_images, degradations)
    assert result.layers == ["level1", "level2", "level3", "level4"]
    np.testing.assert_allclose(result.values[:, 0, :], 1.0, atol=1e-6)
    assert (result.values[:, 1, :] < 1.0).all()


def test_clip_probe_identity(two_images) -> None:
    spec = {"type": "clip", "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "image_size": 64}}
    result = probe.probe_spec("backbone", spec, two_images[:1], probe.build_degradations(["identity"]))
    assert result.layers == ["0", "1"]
    np.testing.assert_allclose(result.values, 1.0, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 100.0), channels=st.integers(1, 8))
def test_token_cosine_identities(seed: int, scale: float, channels: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(2, channels, 3, 5, generator=gen)
    a[:, :, 0, 0] = 0  # zero vectors equal to themselves count as similarity 1
    assert torch.allclose(probe.token_cosine(a, a), torch.ones(2))
    assert torch.allclose(probe.token_cosine(a, a * scale), torch.ones(2), atol=1e-5)
    flipped = probe.token_cosine(a, -a)
    assert torch.allclose(flipped, torch.full((2,), (-14 + 1) / 15), atol=1e-5)  # the zero token stays 1


@pytest.mark.parametrize("n,expected", [(12, [0, 3, 6, 9, 11]), (2, [0, 1]), (1, [0]), (40, [0, 10, 20, 30, 39])])
def test_default_layers(n: int, expected: list[int]) -> None:
    assert probe.default_layers(n) == expected


def test_parsing_specs_and_lists() -> None:
    assert probe.parse_spec("dinov2", "--backbone") == "dinov2"
    assert probe.parse_spec("{type: dinov2, size: s}", "--backbone") == {"type": "dinov2", "size": "s"}
    with pytest.raises(BuildError, match="--backbone"):
        probe.parse_spec("{size: s}", "--backbone")
    with pytest.raises(RecipeError, match="--body"):
        probe.parse_spec("{type: [", "--body")
    assert probe.parse_degradations("noise, rain") == ["noise", "rain"]
    assert probe.parse_degradations("[{type: noise, sigma: 15}, haze]") == [{"type": "noise", "sigma": 15}, "haze"]
    assert probe.parse_int_list("0, 3,6", "--layers") == [0, 3, 6]
    with pytest.raises(BuildError, match="--layers"):
        probe.parse_int_list("a,b", "--layers")
    assert [label for label, _ in probe.build_degradations(None)] == [
        "noise sigma=15",
        "noise sigma=25",
        "noise sigma=50",
        "rain",
        "haze",
        "motion_blur",
        "low_light",
    ]


def test_images_by_name_or_file(tmp_path) -> None:
    img = probe.load_probe_image("chelsea", 48)
    assert img.shape == (3, 48, 48) and 0 <= img.min() and img.max() <= 1
    assert probe.load_probe_image("coffee", None).shape == (3, 400, 600)
    from restorekit.io.image_files import write_image

    path = tmp_path / "photo.png"
    write_image(path, torch.rand(3, 30, 50))
    assert probe.load_probe_image(str(path), 24).shape == (3, 24, 24)
    with pytest.raises(RestorekitError, match="no_such_photo"):
        probe.load_probe_image("no_such_photo")


def test_cli_probe(tmp_path, capsys) -> None:
    spec = "{type: dinov2, size: s, img_size: 56, model_kwargs: {depth: 2, embed_dim: 32, num_heads: 2}}"
    rc = main(
        [
            "probe",
            "--backbone",
            spec,
            "--layers",
            "0,1",
            "--images",
            "astronaut,rocket",
            "--size",
            "42",
            "--degradations",
            "identity,motion_blur",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "mean cosine similarity" in out and "motion_blur" in out
    rows = read_rows(tmp_path / "probe.csv")
    assert {r["image"] for r in rows} == {"astronaut", "rocket", "mean"}
    assert all(math.isclose(float(r["cosine"]), 1.0, abs_tol=1e-6) for r in rows if r["degradation"] == "identity")
    assert (tmp_path / "probe.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_probe_errors_are_clean(tmp_path, capsys) -> None:
    rc = main(
        [
            "probe",
            "--backbone",
            json.dumps(TINY_DINOV2),
            "--layers",
            "0,99",
            "--images",
            "astronaut",
            "--size",
            "28",
            "--degradations",
            "identity",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2 and "layer 99" in capsys.readouterr().err
    assert main(["probe", "--body", "restormer", "--layers", "0"]) == 2
    assert "--layers does not apply to a body" in capsys.readouterr().err


def test_benchmark_script_tiny(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("robustness_probe", REPO / "benchmarks" / "robustness_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rc = module.main(
        [
            "--tiny",
            "--backbone",
            "dinov2",
            "--backbone",
            "clip",
            "--body",
            "restormer",
            "--images",
            "astronaut",
            "--size",
            "32",
            "--degradations",
            "identity,noise",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    rows = read_rows(tmp_path / "robustness_probe.csv")
    assert len({r["extractor"] for r in rows}) == 3
    assert all(math.isclose(float(r["cosine"]), 1.0, abs_tol=1e-6) for r in rows if r["degradation"] == "identity")
    assert (tmp_path / "robustness_probe.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "robustness_probe.json").is_file()


def test_compare_rules_is_one_where_the_grid_fits_a_window_and_measures_the_change_beyond(two_images) -> None:
    from restorekit import build

    torch.manual_seed(0)
    backbone = build("backbone", TINY_DINOV2)
    fits = probe.compare_rules(backbone, two_images, ["windowed", "budget"], layers=[0, 2], window=7)
    assert fits.values.shape == (2, 2, 2) and fits.condition == "rule"
    np.testing.assert_allclose(fits.values, 1.0, atol=1e-6)  # 56 px at stride 8: 7 x 7 tokens, one window
    windowed = probe.compare_rules(backbone, two_images, ["windowed", "budget"], layers=[0, 2], window=4, overlap=1)
    assert (windowed.values < 1 - 1e-4).any() and (windowed.values > -1).all()
    assert "rule vs global pass" in windowed.table()
    with pytest.raises(BuildError, match="windowed, budget"):
        probe.compare_rules(backbone, two_images, ["global"])


def test_cli_probe_compares_rules(tmp_path, capsys) -> None:
    rc = main(
        [
            "probe",
            "--backbone",
            json.dumps(TINY_DINOV2),
            "--compare-rules",
            "windowed,budget",
            "--guide-window",
            "4",
            "--guide-overlap",
            "1",
            "--layers",
            "0,1",
            "--images",
            "astronaut",
            "--size",
            "48",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert "rule vs global pass" in capsys.readouterr().out
    rows = read_rows(tmp_path / "probe.csv")
    assert {r["rule"] for r in rows} == {"windowed", "budget"} and {r["layer"] for r in rows} == {"0", "1"}
    assert (tmp_path / "probe.png").read_bytes()[:8] == PNG_MAGIC
    assert main(["probe", "--compare-rules", "windowed", "--degradations", "noise"]) == 2
    assert "--degradations does not apply to --compare-rules" in capsys.readouterr().err


# -- the per-layer DPC distance (why DPC reads early layers) -----------------------------------
def test_relative_l1_matches_a_numpy_evaluation() -> None:
    gen = torch.Generator().manual_seed(3)
    clean, degraded = torch.randn(2, 5, 4, 3, generator=gen), torch.randn(2, 5, 4, 3, generator=gen)
    c, d = clean.numpy().reshape(2, -1), degraded.numpy().reshape(2, -1)
    expected = np.abs(c - d).mean(axis=1) / np.abs(c).mean(axis=1)
    np.testing.assert_allclose(probe.relative_l1(clean, degraded).numpy(), expected, rtol=1e-6)
    assert torch.equal(probe.relative_l1(clean, clean), torch.zeros(2))


def test_l1_probe_over_every_block_equals_the_distance_of_the_backbones_own_maps(two_images) -> None:
    """`--metric l1 --layers all`: each block's value is mean|phi(c) - phi(d)| / mean|phi(c)|, computed apart."""
    from restorekit import build
    from restorekit.data.seeding import derive_seed

    torch.manual_seed(0)
    backbone = build("backbone", TINY_DINOV2).eval()
    degradations = probe.build_degradations([{"type": "noise", "sigma": 50}, "identity"])
    features, labels = probe.backbone_features(backbone, probe.parse_layers("all"))
    assert labels == ["0", "1", "2"]
    result = probe.run_probe(features, labels, two_images, degradations, seed=5, metric="l1")
    assert result.metric == "l1" and "relative L1 distance" in result.table()
    np.testing.assert_allclose(result.values[:, 1, :], 0.0)  # identity: no distance
    for i, (_, img) in enumerate(two_images):
        noisy = degradations[0][1](img, rng=derive_seed(5, i, 0))
        with torch.no_grad():
            maps_c, maps_d = backbone(img[None], [0, 1, 2]), backbone(noisy[None], [0, 1, 2])
        for k in range(3):
            c, d = maps_c[k].double().numpy(), maps_d[k].double().numpy()
            expected = np.abs(c - d).mean() / np.abs(c).mean()
            assert result.values[i, 0, k] == pytest.approx(expected, rel=1e-4)


def test_cli_probe_l1_over_all_layers(tmp_path, capsys) -> None:
    spec = "{type: dinov2, size: s, img_size: 56, model_kwargs: {depth: 2, embed_dim: 32, num_heads: 2}}"
    argv = ["probe", "--backbone", spec, "--layers", "all", "--metric", "l1", "--images", "astronaut",
            "--size", "42", "--degradations", "identity,rain", "--out", str(tmp_path), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert "relative L1 distance (DPC's)" in capsys.readouterr().out
    rows = read_rows(tmp_path / "probe.csv")
    assert {r["layer"] for r in rows} == {"0", "1"} and "l1" in rows[0]
    assert all(float(r["l1"]) == 0.0 for r in rows if r["degradation"] == "identity")
    assert all(float(r["l1"]) > 0.0 for r in rows if r["degradation"] == "rain")
    assert (tmp_path / "probe.png").read_bytes()[:8] == PNG_MAGIC
    argv = ["probe", "--backbone", spec, "--compare-rules", "budget", "--metric", "l1", "--out", str(tmp_path / "r")]
    assert main(argv) != 0
    assert "--metric does not apply to --compare-rules" in capsys.readouterr().err
