"""Guidance at any resolution: window placement, seamless blending, the budget rule,
and that a grid fitting one window (every training crop) runs the global pass exactly."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_dino_ir import tiny_dino_ir
from torch import nn

from restorekit import build
from restorekit.backbones.base import FeatureBackbone
from restorekit.backbones.guide import GuidePass, budget_grid, window_spans, window_weights
from restorekit.errors import BuildError
from restorekit.losses.dpc import DPCLoss
from restorekit.tiny import tiny_backbone_spec


class PatchLocal(FeatureBackbone):
    """A backbone whose every token depends on its own patch only (no attention), so
    any window layout must reproduce the global pass: what blending is checked against."""

    def __init__(self, patch: int = 14) -> None:
        super().__init__(name="patch_local")
        self.embed_dim, self.num_layers, self.patch_size = 4, 2, patch
        self.proj = nn.Conv2d(3, 4, patch, patch)
        self._finish_init()

    def _extract(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        z = self.proj(x)
        return [z * (i + 1) for i in indices]


class Recorder(nn.Module):
    """Wraps a backbone and records the token grid of every call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, []
        self.patch_size = inner.patch_size

    def forward(self, x, layers, grid=None):  # noqa: ANN001, ANN201
        out = self.inner(x, layers, grid)
        self.calls.append((x.shape[0], tuple(next(iter(out.values())).shape[-2:])))
        return out


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return build("backbone", tiny_backbone_spec({"type": "dinov2", "size": "s"}, depth=2))


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 700), window=st.integers(1, 60), data=st.data())
def test_windows_cover_the_grid_with_the_overlap_and_no_more_windows_than_needed(length, window, data) -> None:
    overlap = data.draw(st.integers(0, window - 1))
    spans = window_spans(length, window, overlap)
    sizes = {size for _, size in spans}
    assert len(sizes) == 1 and sizes.pop() <= window
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == length
    for (a, size), (b, _) in zip(spans, spans[1:]):
        assert 0 < b - a and a + size - b >= overlap  # each window moves on and overlaps enough
    n = len(spans)
    if n > 1:  # one window fewer could not cover the grid with that overlap
        assert (n - 1) * window - (n - 2) * overlap < length


@settings(max_examples=100, deadline=None)
@given(length=st.integers(1, 300), window=st.integers(2, 40), data=st.data())
def test_blending_weights_are_a_partition_of_unity(length, window, data) -> None:
    spans = window_spans(length, window, data.draw(st.integers(0, window - 1)))
    weights = window_weights(spans, length)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, size), weight in zip(spans, weights):
        total[start : start + size] += weight
    assert (weights > 0).all()
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 200),
    w=st.integers(1, 200),
    window=st.integers(2, 9),
    data=st.data(),
    grid=st.sampled_from(["stride", "native"]),
)
def test_windows_reproduce_a_local_backbone_exactly_at_odd_sizes(h, w, window, data, grid) -> None:
    torch.manual_seed(0)
    backbone = PatchLocal()
    x = torch.rand(2, 3, h, w)
    overlap = data.draw(st.integers(0, window - 1))
    whole = GuidePass(grid=grid, rule="global", pad_multiple=8)(backbone, x, [0, 1])
    windowed = GuidePass(grid=grid, rule="windowed", window=window, overlap=overlap, pad_multiple=8)(
        backbone, x, [0, 1]
    )
    for layer in (0, 1):
        assert windowed[layer].shape == whole[layer].shape
        torch.testing.assert_close(windowed[layer], whole[layer], rtol=1e-5, atol=1e-5)


def test_a_constant_image_gives_a_constant_guide() -> None:
    torch.manual_seed(0)
    image = torch.full((1, 3, 301, 457), 0.37)
    maps = GuidePass(window=9, overlap=3, pad_multiple=8)(PatchLocal(), image, [1])[1]
    assert maps.shape[-2:] == (38, 58)
    torch.testing.assert_close(maps, maps[:, :, :1, :1].expand_as(maps), rtol=0, atol=1e-5)


@pytest.mark.parametrize("rule", ["windowed", "budget"])
def test_a_grid_that_fits_one_window_is_the_global_pass_exactly(vit, rule) -> None:
    x = torch.rand(1, 3, 120, 296)  # stride 8: 15 x 37 tokens, exactly the window's width
    expected = GuidePass(rule="global", pad_multiple=8)(vit, x, [0, 1])
    got = GuidePass(rule=rule, window=37, pad_multiple=8)(vit, x, [0, 1])
    assert all(torch.equal(got[k], expected[k]) for k in (0, 1))
    wider = torch.rand(1, 3, 120, 304)  # 38 tokens: no longer one window
    assert not torch.equal(GuidePass(rule=rule)(vit, wider, [1])[1], GuidePass(rule="global")(vit, wider, [1])[1])


def test_windowed_pass_runs_windows_of_at_most_the_window(vit) -> None:
    spy = Recorder(vit)
    rule = GuidePass(window=6, overlap=2)
    maps = rule(spy, torch.rand(2, 3, 80, 104), [1])[1]
    assert maps.shape == (2, vit.embed_dim, 10, 13)
    assert all(h <= 6 and w <= 6 for _, (h, w) in spy.calls)
    assert sum(batch * h * w for batch, (h, w) in spy.calls) == 2 * rule.tokens_run((10, 13))
    assert rule.tokens_run((10, 13)) == 2 * 6 * 3 * 6  # rows: 2 windows of 6, columns: 3 of 6


def test_budget_rule_runs_one_pass_within_the_window_and_resizes_back(vit) -> None:
    assert budget_grid((100, 40), 37) == (37, 15) and budget_grid((20, 30), 37) == (20, 30)
    spy = Recorder(vit)
    maps = GuidePass(rule="budget", window=5)(spy, torch.rand(1, 3, 80, 40), [1])[1]
    assert spy.calls == [(1, (5, 2))] and maps.shape[-2:] == (10, 5)


def test_gradients_flow_through_the_windows() -> None:
    backbone = PatchLocal()
    x = torch.rand(1, 3, 90, 70, requires_grad=True)
    GuidePass(window=4, overlap=1)(backbone, x, [1])[1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_default_model_is_unchanged_on_training_crops_and_windows_larger_images() -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir().eval()
    assert (model.guide_pass.rule, model.guide_pass.window, model.guide_pass.overlap) == ("windowed", 37, 3)
    _nonzero_adapters(model)
    reference, small_window = tiny_dino_ir(guide_pass="global").eval(), tiny_dino_ir(guide_window=5).eval()
    for other in (reference, small_window):
        other.load_state_dict(model.state_dict())
    crop = torch.rand(2, 3, 128, 128)  # 16 x 16 tokens: one window
    assert torch.equal(model(crop), reference(crop))
    assert not torch.equal(small_window(crop), model(crop))


def test_dpc_runs_its_passes_by_the_models_windowed_rule() -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir(guide_window=4, guide_overlap=1)
    loss = DPCLoss(layers=[0, 1])
    loss.bind(model)
    lq, gt = torch.rand(1, 3, 45, 61), torch.rand(1, 3, 45, 61)
    restored, aux = model(lq, return_aux=True)
    assert aux.guide_pass is model.guide_pass and aux.grid == (6, 8)
    fresh = model.guide_pass(model.backbone, lq, [0, 1])
    assert all(torch.equal(aux.lq_features[k], fresh[k]) for k in (0, 1))
    cached = loss(restored, gt, lq=lq, aux=aux)
    recomputed = DPCLoss(layers=[0, 1], backbone=model.backbone)
    recomputed.own_pass = model.guide_pass
    torch.testing.assert_close(cached, recomputed(restored, gt, lq=lq))
    out = restored.detach().requires_grad_(True)
    loss(out, gt, lq=lq, aux=aux).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0


def test_odd_sizes_keep_the_guide_on_the_body_grid() -> None:
    model = tiny_dino_ir(guide_window=3, guide_overlap=1)
    lq = torch.rand(1, 3, 37, 53)
    restored, aux = model(lq, return_aux=True)
    assert restored.shape == lq.shape
    assert aux.guide.shape[-2:] == (math.ceil(40 / 8), math.ceil(56 / 8))


@pytest.mark.parametrize(
    ("knobs", "key"),
    [
        ({"guide_pass": "tiles"}, "guide_pass"),
        ({"guide_window": 0}, "guide_window"),
        ({"guide_overlap": -1}, "guide_overlap"),
        ({"guide_window": 4, "guide_overlap": 4}, "guide_overlap"),
        ({"guide_grid": "auto"}, "guide_grid"),
    ],
)
def test_bad_knobs_name_the_key(knobs, key) -> None:
    with pytest.raises(BuildError, match=f"dino_ir: {key}"):
        tiny_dino_ir(**knobs)


def _nonzero_adapters(model: nn.Module) -> None:
    """Give the zero-initialised adapter layers weights, so the guide reaches the output."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for adapter in model.adapters.values():
            for module in adapter.zero_initialised():
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.05)


# -- the blend against hand values -----------------------------------------------------------------
def test_window_spans_and_ramp_weights_by_hand() -> None:
    assert window_spans(10, 4, 1) == [(0, 4), (3, 4), (6, 4)]  # 3 windows of 4, overlaps of 1
    assert window_spans(6, 4, 2) == [(0, 4), (2, 4)]
    # overlap 2: the earlier window ramps down (4 - k) / 3, the later one up (k + 1) / 3
    torch.testing.assert_close(
        window_weights([(0, 4), (2, 4)], 6),
        torch.tensor([[1, 1, 2 / 3, 1 / 3], [1 / 3, 2 / 3, 1, 1]], dtype=torch.float64),
    )
    # overlaps of 1: one shared token, half and half; the middle window ramps at both ends
    torch.testing.assert_close(
        window_weights([(0, 4), (3, 4), (6, 4)], 10),
        torch.tensor([[1, 1, 1, 0.5], [0.5, 1, 1, 0.5], [0.5, 1, 1, 1]], dtype=torch.float64),
    )


class WindowMean(nn.Module):
    """Not local: every token of a call is the mean of the whole crop it saw (per image)."""

    patch_size = 1

    def forward(self, x, layers, grid=None):  # noqa: ANN001, ANN201
        means = x.mean(dim=(1, 2, 3))[:, None, None, None]
        return {layer: means.expand(-1, 1, *x.shape[-2:]) * (layer + 1) for layer in layers}


def test_windowed_pass_blends_the_window_maps_with_the_ramps_by_hand() -> None:
    x = torch.rand(1, 3, 4, 10)  # native grid at patch 1: 4 x 10 tokens, windows (0, 4), (3, 4), (6, 4) along x
    out = GuidePass(grid="native", rule="windowed", window=4, overlap=1)(WindowMean(), x, [0, 1])
    means = [x[:, :, :, s : s + 4].mean().item() for s in (0, 3, 6)]
    ramps = [[1, 1, 1, 0.5], [0.5, 1, 1, 0.5], [0.5, 1, 1, 1]]
    row = [0.0] * 10
    for start, mean, ramp in zip((0, 3, 6), means, ramps):
        for k in range(4):
            row[start + k] += ramp[k] * mean
    expected = torch.tensor(row).expand(4, 10)
    torch.testing.assert_close(out[0][0, 0], expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[1][0, 0], 2 * expected, rtol=1e-6, atol=1e-6)
    tall = torch.rand(1, 3, 10, 4)  # the same along y: the row weights go on the rows
    col = GuidePass(grid="native", rule="windowed", window=4, overlap=1)(WindowMean(), tall, [0])[0][0, 0, :, 0]
    means = [tall[:, :, s : s + 4].mean().item() for s in (0, 3, 6)]
    want = [0.0] * 10
    for start, mean, ramp in zip((0, 3, 6), means, ramps):
        for k in range(4):
            want[start + k] += ramp[k] * mean
    torch.testing.assert_close(col, torch.tensor(want), rtol=1e-6, atol=1e-6)


class ColumnIndex(nn.Module):
    """Token (i, j) of the requested grid holds j: a ramp along the columns."""

    patch_size = 8

    def forward(self, x, layers, grid=None):  # noqa: ANN001, ANN201
        ramp = torch.arange(grid[1], dtype=x.dtype).expand(x.shape[0], 1, *grid)
        return {layer: ramp for layer in layers}


def test_budget_rule_resizes_the_small_maps_back_bilinearly_by_hand() -> None:
    """A 1 x 4 grid over a window of 2 runs at 1 x 2; (0, 1) resized to 4 columns (half-pixel
    centres, edges clamped) is (0, 1/4, 3/4, 1)."""
    maps = GuidePass(rule="budget", window=2, overlap=1)(ColumnIndex(), torch.rand(1, 3, 8, 32), [0])[0]
    torch.testing.assert_close(maps[0, 0], torch.tensor([[0.0, 0.25, 0.75, 1.0]]))
