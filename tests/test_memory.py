"""Memory budgets for inference: sizes, exact live-byte counts, and the tile a budget buys."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
from tiny_dino_ir import tiny_dino_ir
from torch import nn

from restorekit.commands import restore as restore_command
from restorekit.engine import memory
from restorekit.engine.infer import restore_files, restore_tensor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8G", 8 * 2**30),
        ("8GiB", 8 * 2**30),
        ("512m", 512 * 2**20),
        ("1.5g", int(1.5 * 2**30)),
        ("100", 100),
        ("2T", 2 * 2**40),
        (" 64 MB ", 64 * 2**20),
    ],
)
def test_memory_sizes_parse(text, expected) -> None:
    assert memory.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "eight", "8X", "-1G", "0"])
def test_bad_memory_sizes_name_the_option(text) -> None:
    with pytest.raises(memory.MemoryBudgetError, match="--max-memory"):
        memory.parse_memory(text)


def test_live_bytes_count_storages_once_and_free_them() -> None:
    def work() -> torch.Tensor:
        a = torch.empty(1000)  # 4000 bytes
        view = a.view(10, 100)  # a view: no new bytes
        b = view + 1  # 4000 more: peak 8000
        del a, view
        c = b * 2  # a freed: 8000 again (b, c)
        return c.double()  # + 8000: peak 16000

    assert memory.peak_bytes(work) == 16000


def test_activation_bytes_of_a_convolution_are_exact() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # input (3 x 4 bytes), output (8 x 4), the tiler's float64 copy (8 x 8): 108 bytes a pixel, at once
    assert memory.activation_bytes(conv, 2, 20, 30) == 108 * 2 * 20 * 30
    assert all(p.device.type == "cpu" for p in conv.parameters())  # counted on the meta device


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return tiny_dino_ir().eval()


def test_the_planner_takes_the_largest_tile_the_budget_allows(model) -> None:
    height, width = 700, 500
    planner = memory.TilePlanner(model, 2**40, max_batch=1)
    assert planner.plan(height, width).tile is None  # a large budget: the whole image at once
    fits_320 = planner.cost(height, width, 320)
    planner.budget = fits_320
    plan = planner.plan(height, width)
    assert (plan.tile, plan.batch, plan.estimate) == (320, 1, fits_320)
    planner.budget = fits_320 - 1
    assert planner.plan(height, width).tile == 256
    # the arithmetic: what is resident (the weights, here) + the image's buffers + the margin over the activations
    counted = memory.activation_bytes(model, 1, 320, 320)
    expected = memory.model_bytes(model) + memory.IMAGE_BYTES_PER_PIXEL * height * width + int(memory.MARGIN * counted)
    assert fits_320 == expected


def test_the_planner_batches_tiles_when_the_budget_allows_and_warns_when_nothing_fits(model, caplog) -> None:
    planner = memory.TilePlanner(model, 2**40, max_batch=3, min_tile=128)
    planner.budget = planner.cost(1000, 1000, 192, 2)
    plan = planner.plan(1000, 1000)
    assert plan.tile >= 192 and plan.estimate <= planner.budget
    planner.budget = planner.cost(1000, 1000, 128, 1) - 1
    with caplog.at_level(logging.WARNING, logger="restorekit.engine.memory"):
        plan = planner.plan(1000, 1000)
    assert (plan.tile, plan.batch) == (128, 1) and "too small" in caplog.text


def test_the_prediction_matches_the_count_for_windowed_guidance(model) -> None:
    planner = memory.TilePlanner(model, 2**40)
    counted = memory.activation_bytes(model, 1, 384, 640)
    predicted = planner.per_call + planner.per_pixel * 384 * 640
    assert abs(predicted - counted) <= 0.02 * counted


def test_restore_files_picks_tiles_from_the_budget(model, tmp_path, caplog, monkeypatch) -> None:
    from restorekit.io.image_files import load_image, write_image

    gen = torch.Generator().manual_seed(0)
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    write_image(src, torch.rand(3, 300, 260, generator=gen), bit_depth=8)
    resident = 2**30  # what the process holds, fixed so the plan does not depend on this test process
    monkeypatch.setattr(memory, "resident_bytes", lambda device: resident)
    planner = memory.TilePlanner(model, 2**40, min_tile=memory.smallest_tile(32), resident=resident)
    budget = planner.cost(300, 260, 192)
    with caplog.at_level(logging.INFO, logger="restorekit.engine.infer"):
        restore_files(model, [(src, out)], tile="auto", overlap=32, device=torch.device("cpu"), max_memory=budget)
    assert "tiles of 192 px" in caplog.text
    image = load_image(src).rgb[None]
    expected = restore_tensor(model, image, tile=192, overlap=32)[0]
    written = load_image(out).rgb
    assert (written - expected).abs().max() <= 1 / 255 + 1e-6


def test_resident_memory_is_the_process_rss_in_bytes() -> None:
    import resource

    cpu = torch.device("cpu")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    now = memory.resident_bytes(cpu)
    assert 50 * 2**20 < now <= peak + 2**20  # torch alone is over 50 MiB; never above the peak
    assert memory.default_budget(cpu) > memory.resident_bytes(cpu)


def test_restore_progress_reports_every_tile() -> None:
    seen = []
    restore_tensor(
        lambda x: x,
        torch.rand(1, 3, 100, 70),
        tile=48,
        overlap=8,
        tile_batch=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[0] == (0, 6) and seen[-1] == (6, 6) and len(seen) == 4


def test_restore_command_reads_tile_and_budget_options() -> None:
    parser = argparse.ArgumentParser()
    restore_command.add_arguments(parser)
    args = parser.parse_args(["in.png", "out.png", "--weights", "w"])
    assert args.tile == "auto" and args.max_memory is None
    assert parser.parse_args(["a", "b", "--weights", "w", "--tile", "256"]).tile == 256
    with pytest.raises(SystemExit):
        parser.parse_args(["a", "b", "--weights", "w", "--tile", "big"])
