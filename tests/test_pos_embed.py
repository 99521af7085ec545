"""DINOv2 position embeddings: equal to Meta's forward at every grid, for both model families.

The reference below is Meta's ``interpolate_pos_encoding`` and ``prepare_tokens_with_masks``
(``dinov2/models/vision_transformer.py``) written from their arithmetic with
``F.interpolate``, run on a tiny ViT with random weights; restorekit's resize is a
float64 matrix form of the same resamplers.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit.backbones.pos_embed import meta_rule, resize_patch_pos_embed
from restorekit.backbones.timm_vit import DINOv2Backbone, TimmBackbone
from restorekit.errors import BuildError

TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2}  # img_size stays 518: a 37 x 37 trained grid
PATCH = 14


def tiny(registers: bool, resize: str = "meta") -> DINOv2Backbone:
    torch.manual_seed(3)
    backbone = DINOv2Backbone(size="s", registers=registers, model_kwargs=TINY, pos_embed_resize=resize)
    with torch.no_grad():  # position tables with structure, as trained ones have, not N(0, 0.02) noise
        backbone.model.pos_embed.normal_(0, 1)
    return backbone


def meta_interpolate(table: torch.Tensor, rows: int, cols: int, registers: bool) -> torch.Tensor:
    """Meta's interpolate_pos_encoding on the patch part of the table (1, M*M, C) -> (1, rows*cols, C)."""
    side = math.isqrt(table.shape[1])
    if rows * cols == side * side and rows == cols:
        return table
    grid = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # Meta's .float(): the tables are float already
    if registers:  # interpolate_offset=0, interpolate_antialias=True
        out = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True)
    else:  # interpolate_offset=0.1, interpolate_antialias=False
        scale = ((rows + 0.1) / side, (cols + 0.1) / side)
        out = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    assert out.shape[-2:] == (rows, cols)
    return out.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)


def meta_forward(backbone: DINOv2Backbone, x: torch.Tensor, layers: list[int], registers: bool) -> dict:
    """Meta's token path on the same weights (timm folds the class position into cls_token for reg models)."""
    model = backbone.model
    z = (x - backbone.mean) / backbone.std
    rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
    patches = model.patch_embed.proj(z).flatten(2).transpose(1, 2)
    table = model.pos_embed if registers else model.pos_embed[:, 1:]
    cls = model.cls_token if registers else model.cls_token + model.pos_embed[:, :1]
    tokens = torch.cat([cls.expand(len(x), -1, -1), patches + meta_interpolate(table, rows, cols, registers)], 1)
    if registers:  # Meta inserts the registers after the class token, past the position embeddings
        tokens = torch.cat([tokens[:, :1], model.reg_token.expand(len(x), -1, -1), tokens[:, 1:]], 1)
    out = {}
    for index, block in enumerate(model.blocks[: max(layers) + 1]):
        tokens = block(tokens)
        if index in layers:
            maps = tokens[:, model.num_prefix_tokens :]
            out[index] = maps.reshape(len(x), rows, cols, -1).permute(0, 3, 1, 2)
    return out


def max_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("registers", [False, True], ids=["original", "reg4"])
@pytest.mark.parametrize("grid", [(16, 16), (32, 32), (64, 64), (12, 20), (37, 37), (37, 23)])
def test_features_equal_metas_forward_at_every_grid(registers: bool, grid: tuple[int, int]) -> None:
    backbone = tiny(registers)
    torch.manual_seed(0)
    x = torch.rand(1, 3, grid[0] * PATCH, grid[1] * PATCH)
    with torch.no_grad():
        ours = backbone(x, [0, 1], grid=grid)
        reference = meta_forward(backbone, x, [0, 1], registers)
    for layer in (0, 1):
        assert max_relative(ours[layer], reference[layer]) < 1e-5


def test_timm_resize_is_a_knob_and_differs_from_metas_for_the_original_models() -> None:
    x = torch.rand(1, 3, 16 * PATCH, 16 * PATCH)
    with torch.no_grad():
        meta = tiny(False)(x, [1], grid=(16, 16))[1]
        timm = tiny(False, "timm")(x, [1], grid=(16, 16))[1]
        reference = meta_forward(tiny(False), x, [1], registers=False)[1]
        native = torch.rand(1, 3, 37 * PATCH, 37 * PATCH)
        at_native = (tiny(False)(native, [1])[1], tiny(False, "timm")(native, [1])[1])
    assert max_relative(timm, reference) > 1e-3  # timm's antialiased resize is not Meta's
    assert max_relative(meta, reference) < 1e-5
    torch.testing.assert_close(*at_native, rtol=1e-6, atol=1e-6)  # the trained grid: no resize either way


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 80), cols=st.integers(1, 80), side=st.integers(2, 40), registers=st.booleans())
def test_matrix_resize_equals_f_interpolate(rows: int, cols: int, side: int, registers: bool) -> None:
    torch.manual_seed(rows * 100 + cols)
    table = torch.randn(1, side * side, 3, dtype=torch.float64)
    ours = resize_patch_pos_embed(table, (rows, cols), (side, side), meta_rule(registers))
    torch.testing.assert_close(ours, meta_interpolate(table, rows, cols, registers).double(), rtol=0, atol=1e-12)


def test_meta_resize_on_a_model_without_a_class_token_is_refused() -> None:
    with pytest.raises(BuildError, match="pos_embed_resize='meta' needs a ViT with a class token"):
        TimmBackbone("vit_base_patch16_siglip_224", model_kwargs=TINY, pos_embed_resize="meta")
    with pytest.raises(BuildError, match="pos_embed_resize must be one of"):
        DINOv2Backbone(size="s", model_kwargs=TINY, pos_embed_resize="bilinear")
