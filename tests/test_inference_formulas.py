"""Inference arithmetic against hand values: tile offsets and blending ramps, a tiled restore of a
non-local model, the x8 self-ensemble's average, and the export's padding to a multiple."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from restorekit.engine.ensemble import SelfEnsemble
from restorekit.engine.export import PaddedModel
from restorekit.engine.infer import restore_tensor, tile_starts, tile_window


def test_tile_offsets_and_ramps_by_hand() -> None:
    assert tile_starts(10, 4, 2) == [0, 2, 4, 6]
    assert tile_starts(11, 4, 1) == [0, 3, 6, 7]  # the last tile flush with the end
    assert tile_starts(4, 6, 2) == [0]
    # overlap 8: guard band 2 (weight 0), then a ramp over 4 pixels in steps of 1/5
    both = tile_window(1, 8, False, False, True, True, 8)[0]
    torch.testing.assert_close(both, torch.tensor([0, 0, 0.2, 0.4, 0.4, 0.2, 0, 0], dtype=torch.float64))
    left = tile_window(1, 12, False, False, True, False, 8)[0]
    torch.testing.assert_close(left, torch.tensor([0, 0, 0.2, 0.4, 0.6, 0.8] + [1] * 6, dtype=torch.float64))
    corner = tile_window(12, 12, True, False, False, True, 8)  # top and right shared: the outer product
    torch.testing.assert_close(corner, left[:, None] * left.flip(0)[None, :])


class TileMean(nn.Module):
    """Not local: every pixel of a tile becomes the tile's mean (per image and channel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


def test_a_tiled_restore_is_the_ramp_weighted_average_of_the_tiles() -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 12, 20, generator=gen)
    got = restore_tensor(TileMean(), image, tile=12, overlap=8)  # x: tiles at 0, 4, 8 (12 wide); one row
    ramps = {  # guard 2, span 4: (k - 1) / 5 up from a shared left edge, its mirror down to a shared right edge
        0: [1] * 6 + [0.8, 0.6, 0.4, 0.2, 0, 0],
        4: [0, 0, 0.2, 0.4, 0.6, 0.8, 0.8, 0.6, 0.4, 0.2, 0, 0],  # both edges shared
        8: [0, 0, 0.2, 0.4, 0.6, 0.8] + [1] * 6,
    }
    want = np.zeros((3, 20))
    total = np.zeros(20)
    for start, ramp in ramps.items():
        means = image[0, :, :, start : start + 12].mean(dim=(1, 2)).numpy()
        for k in range(12):
            want[:, start + k] += ramp[k] * means
            total[start + k] += ramp[k]
    want = np.broadcast_to((want / total)[:, None, :], (3, 12, 20))
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-6, atol=1e-6)


class RowRamp(nn.Module):
    """Not equivariant: adds 0, ..., 1 down the rows of whatever it is given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.linspace(0, 1, x.shape[-2]).view(1, 1, -1, 1)


def test_self_ensemble_of_a_row_ramp_adds_one_half_everywhere() -> None:
    """Mapped back, the 8 ramps run down, up, right and left twice each; down + up = 1 = right + left."""
    x = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(SelfEnsemble(RowRamp())(x), x + 0.5, rtol=0, atol=1e-6)
    torch.testing.assert_close(SelfEnsemble(nn.Identity())(x), x)


class Recording(nn.Module):
    """Records its input and returns it times 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return 2 * x


def test_export_pads_by_reflection_to_the_next_multiple_and_crops_back() -> None:
    x = torch.rand(1, 2, 13, 9)
    inner = Recording()
    out = PaddedModel(inner, 8)(x)
    want = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 3), (0, 7)), mode="reflect")  # 13 -> 16, 9 -> 16
    np.testing.assert_array_equal(inner.seen.numpy(), want)
    torch.testing.assert_close(out, 2 * x)
    PaddedModel(inner, 8)(torch.rand(1, 2, 16, 8))
    assert inner.seen.shape[-2:] == (16, 8)  # multiples already: no padding
