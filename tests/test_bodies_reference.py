"""The bodies compute what the official code computes, on weights in the released layouts.

Each fixture holds a tiny official model's seeded weights in the layout its project
releases (BasicSR ``.pth``, Lightning ``.ckpt``), a fixed odd-sized input and the
official output (see tests/fixtures/README.md). The body is built from its spec with
``weights:`` pointing at the rebuilt released file, as a user would load a release.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reference_fixtures import FIXTURES, read_reference

from restorekit import build
from restorekit.bodies.moce_blocks import AdapterLayer

# One name per fixture in tests/fixtures; a new body's fixture is one more name here.
REFERENCES = ["restormer", "restormer_dual_pixel_bias_free", "promptir", "adair", "moce_ir"]


@pytest.mark.parametrize("name", REFERENCES)
def test_body_output_equals_the_official_code(name: str, tmp_path: Path) -> None:
    ref = read_reference(name)
    weights = ref.write_release(tmp_path)
    body = build("body", {**ref.body, "weights": str(weights)}).eval()
    with torch.no_grad():
        out = body(ref.input)
    assert out.shape == ref.output.shape
    torch.testing.assert_close(out, ref.output, rtol=0, atol=1e-5)
    # the fixture itself is not trivial: the network changes its input well beyond the tolerance
    assert (ref.output - ref.input[:, : ref.output.shape[1]]).abs().mean() > 0.05


def test_promptir_release_reports_the_official_modules_it_never_uses(tmp_path: Path) -> None:
    ref = read_reference("promptir")
    body = build("body", ref.body)
    report = body.load_weights(ref.write_release(tmp_path))
    assert report.source_key == "state_dict"
    assert {key.split(".")[0] for key in report.ignored} == set(body.unused_official_modules)


def test_moce_ir_fixture_routes_the_images_through_every_expert(tmp_path: Path) -> None:
    """Every expert's computation is part of what the fixture compares, and routing per image too."""
    ref = read_reference("moce_ir")
    body = build("body", {**ref.body, "weights": str(ref.write_release(tmp_path))}).eval()
    with torch.no_grad():
        body(ref.input)
    adapters = [m for m in body.modules() if isinstance(m, AdapterLayer)]
    routes = [adapter.last_indices for adapter in adapters]
    assert set(torch.cat(routes).flatten().tolist()) == set(range(len(adapters[0].experts)))
    assert any(r[0].tolist() != r[1].tolist() for r in routes)  # the two images part ways somewhere


def test_every_fixture_is_tested() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.safetensors")) == sorted(REFERENCES)


# -- MoCE-IR in training mode and at top_k = 2 ---------------------------------------------------
# The fixture also holds the official model's training pass (whole batch, every torch.randn_like
# draw zero: the router's noise off, its noise_std kept for the load term) and the same weights
# routed to two experts (topk=2), at inference and in training.
MOCE_CASES = [("", "train/"), ("top_k2", "top_k2/"), ("top_k2", "top_k2/train/")]


def moce_body(ref, tmp_path: Path, variant: str) -> torch.nn.Module:
    spec = {
        **ref.body,
        **(ref.variants[variant]["body"] if variant else {}),
        "weights": str(ref.write_release(tmp_path)),
    }
    return build("body", spec)


@pytest.mark.parametrize(("variant", "prefix"), MOCE_CASES)
def test_moce_ir_training_output_and_top_k2_equal_the_official_code(
    variant: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = read_reference("moce_ir")
    body = moce_body(ref, tmp_path, variant)
    training = prefix.endswith("train/")
    if training:
        monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # as the official pass: noise drawn as zero
    body.train(training)
    with torch.no_grad():
        out = body(ref.input)
    torch.testing.assert_close(out, ref.results[prefix + "output"], rtol=0, atol=1e-5)
    if training:
        # the official total_loss: 0.5 cv^2(importance) + 0.5 cv^2(load), averaged over the decoder blocks
        balance = body.aux_loss / body.balance_loss_weight
        torch.testing.assert_close(balance.reshape(1), ref.results[prefix + "loss"], rtol=1e-5, atol=1e-6)
    adapters = [m for m in body.modules() if isinstance(m, AdapterLayer)]
    assert all(a.last_indices.shape == (2, 2 if variant else 1) for a in adapters)


def test_moce_ir_top_k2_fixture_differs_from_top_k1_beyond_the_tolerance() -> None:
    """So a router that keeps one expert whatever top_k fails the comparison above."""
    ref = read_reference("moce_ir")
    assert (ref.results["top_k2/output"] - ref.output).abs().max() > 5e-5
    assert (ref.results["top_k2/train/loss"] - ref.results["train/loss"]).abs().item() > 0.1
