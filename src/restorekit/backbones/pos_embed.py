"""Position embeddings resized to any token grid exactly as Meta's DINOv2 does it.

timm resizes a ViT's position embeddings with an antialiased bicubic filter to an
exact size. Meta's DINOv2 (``interpolate_pos_encoding`` in
``dinov2/models/vision_transformer.py``) does not, for its original models: it
interpolates bicubically *without* antialiasing, with the scale factor
``(n + 0.1) / M`` per side (``interpolate_offset=0.1``, ``M`` the trained grid),
and leaves the table untouched at the trained grid. Its register models use an
antialiased bicubic filter to the exact size (``interpolate_antialias=True``,
``interpolate_offset=0``), which is timm's rule. At a 16 x 16 grid (a 128 px crop
at stride 8) the two rules change DINOv2-B's features by about 5%.

:func:`resize_patch_pos_embed` writes both of PyTorch's bicubic resamplers as a
weight matrix per side (``grid_pos = W_h @ table @ W_w^T``), in float64:

* any grid is traced symbolically (``torch.export``, ONNX): no size is baked in,
  where ``F.interpolate`` with a scale factor specialises to the example size;
* autocast never lowers it to bf16 (autocast leaves float64 alone);
* it equals ``F.interpolate`` to float rounding (tests/test_pos_embed.py).

:func:`vit_intermediates` is the token path of a timm ViT with this resize:
patch embedding, class/register tokens, position embeddings, the first blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from restorekit.errors import BuildError

RESIZE_RULES = ("meta", "timm")
META_OFFSET = 0.1  # Meta's interpolate_offset for the original DINOv2 models
CUBIC_A = -0.75  # PyTorch's bicubic (upsample_bicubic2d)
CUBIC_A_ANTIALIAS = -0.5  # PyTorch's antialiased bicubic (PIL's filter)


@dataclass(frozen=True)
class ResizeRule:
    """How a table trained at ``M x M`` becomes an ``h x w`` grid."""

    offset: float  # > 0: bicubic with scale (n + offset) / M, no antialias; 0: exact size
    antialias: bool


def meta_rule(registers: bool) -> ResizeRule:
    """Meta's rule: register models antialias to the exact size; the others use the offset."""
    return ResizeRule(0.0, True) if registers else ResizeRule(META_OFFSET, False)


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel (support 2)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _count(n: Any, device: torch.device | None) -> torch.Tensor:
    """A size (an int, or a symbolic one while tracing) as a float64 scalar tensor."""
    return torch.scalar_tensor(n, dtype=torch.float64, device=device)


def bicubic_matrix(n_out: Any, n_in: int, offset: float, device: torch.device | None = None) -> torch.Tensor:
    """``(n_out, n_in)`` weights of ``upsample_bicubic2d`` (align_corners False, no antialias).

    With ``offset`` > 0 the step between output samples is ``n_in / (n_out + offset)``
    (Meta's scale factor), else ``n_in / n_out``; taps outside the table repeat its edge.
    """
    index = torch.arange(n_out, dtype=torch.float64, device=device)
    step = n_in / (_count(n_out, device) + offset)
    source = (index + 0.5) * step - 0.5
    base = torch.floor(source)
    taps = torch.arange(-1, 3, dtype=torch.float64, device=device)
    weights = _cubic((source - base)[:, None] - taps[None], CUBIC_A)  # (n_out, 4)
    columns = (base[:, None] + taps[None]).clamp(0, n_in - 1).long()
    one_hot = torch.nn.functional.one_hot(columns, n_in).to(torch.float64)
    return (one_hot * weights[..., None]).sum(dim=1)


def antialiased_bicubic_matrix(n_out: Any, n_in: int, device: torch.device | None = None) -> torch.Tensor:
    """``(n_out, n_in)`` weights of ``_upsample_bicubic2d_aa`` (PIL's filter, normalised rows)."""
    index = torch.arange(n_out, dtype=torch.float64, device=device)
    scale = n_in / _count(n_out, device)
    stretch = scale.clamp(min=1.0)  # shrinking widens the filter by the scale; growing keeps it
    center = (index + 0.5) * scale
    source = torch.arange(n_in, dtype=torch.float64, device=device)
    low = torch.floor(center - 2.0 * stretch + 0.5).clamp(min=0)
    high = torch.floor(center + 2.0 * stretch + 0.5).clamp(max=n_in)
    inside = (source[None] >= low[:, None]) & (source[None] < high[:, None])
    weights = _cubic((source[None] - center[:, None] + 0.5) / stretch, CUBIC_A_ANTIALIAS)
    weights = torch.where(inside, weights, torch.zeros_like(weights))
    return weights / weights.sum(dim=1, keepdim=True)


def side_matrix(n_out: Any, n_in: int, rule: ResizeRule, device: torch.device | None = None) -> torch.Tensor:
    """The resize weights of one side under ``rule``."""
    if rule.antialias:
        return antialiased_bicubic_matrix(n_out, n_in, device)
    return bicubic_matrix(n_out, n_in, rule.offset, device)


def resize_patch_pos_embed(
    table: torch.Tensor, grid: tuple[Any, Any], trained: tuple[int, int], rule: ResizeRule
) -> torch.Tensor:
    """``(1, M_h * M_w, C)`` patch position embeddings -> ``(1, h * w, C)`` for ``grid``.

    At the trained grid the table is returned as it is (Meta's models skip the
    resize there; with the offset a resize would not be the identity). The choice
    is made with tensors, so a traced graph keeps both cases.
    """
    height, width = grid
    rows, cols = trained
    dim = table.shape[-1]
    device = table.device
    w_h = side_matrix(height, rows, rule, device)
    w_w = side_matrix(width, cols, rule, device)
    if rule.offset:  # identity at the trained grid, decided inside the graph
        native = (_count(height, device) == rows) & (_count(width, device) == cols)
        w_h = torch.where(native, torch.eye(height, rows, dtype=torch.float64, device=device), w_h)
        w_w = torch.where(native, torch.eye(width, cols, dtype=torch.float64, device=device), w_w)
    grid_table = table.to(torch.float64).reshape(rows, cols, dim)
    resized = torch.einsum("hi,ijc,wj->hwc", w_h, grid_table, w_w)
    return resized.reshape(1, -1, dim).to(table.dtype)


# -- the token path of a timm ViT -----------------------------------------------------
def check_vit(model: Any, name: str) -> None:
    """Raise a BuildError unless ``model`` is a timm ViT laid out as DINOv2 (Meta's resize applies)."""
    needs = ("patch_embed", "pos_embed", "cls_token", "blocks", "no_embed_class", "num_prefix_tokens")
    missing = [n for n in needs if not hasattr(model, n)]
    if missing or model.pos_embed is None or model.cls_token is None:
        raise BuildError(
            f"{name}: pos_embed_resize='meta' needs a ViT with a class token and absolute position "
            f"embeddings (missing: {', '.join(missing) or 'pos_embed/cls_token'}); use pos_embed_resize='timm'"
        )
    if not model.no_embed_class and getattr(model, "reg_token", None) is not None:
        raise BuildError(
            f"{name}: register tokens inside the position table are not DINOv2's layout; use pos_embed_resize='timm'"
        )
    if not getattr(model, "dynamic_img_size", False):
        raise BuildError(f"{name}: pos_embed_resize='meta' needs a model built with dynamic_img_size")


def vit_intermediates(model: Any, x: torch.Tensor, indices: Sequence[int], rule: ResizeRule) -> list[torch.Tensor]:
    """NCHW patch-token maps of blocks ``indices`` (sorted) of a timm ViT, with Meta's resize.

    The same steps as timm's ``forward_intermediates(stop_early=True)`` except the
    position embeddings, which follow ``rule``; no block past ``max(indices)`` runs.
    """
    tokens = model.patch_embed(x)  # (B, h, w, C) for a dynamic-size timm ViT
    batch, height, width, dim = tokens.shape
    tokens = tokens.reshape(batch, height * width, dim)
    table = model.pos_embed
    class_pos = not model.no_embed_class
    patch_table = table[:, 1:] if class_pos else table
    trained = tuple(int(n) for n in model.patch_embed.grid_size)
    patch_pos = resize_patch_pos_embed(patch_table, (height, width), trained, rule)  # type: ignore[arg-type]
    cls = model.cls_token.expand(batch, -1, -1)
    if class_pos:
        cls = cls + table[:, :1]
    prefix = [cls]
    if getattr(model, "reg_token", None) is not None:
        prefix.append(model.reg_token.expand(batch, -1, -1))
    z = torch.cat(prefix + [tokens + patch_pos], dim=1)
    z = model.norm_pre(model.patch_drop(model.pos_drop(z)))
    wanted, out = set(indices), []
    for index, block in enumerate(model.blocks[: max(indices) + 1]):
        z = block(z)
        if index in wanted:
            out.append(z[:, model.num_prefix_tokens :])
    return [y.reshape(batch, height, width, dim).permute(0, 3, 1, 2).contiguous() for y in out]
