"""Image-quality metrics, per image, data range 1: PSNR and SSIM on RGB and on Y.

``metric(pred, target, crop_border=0) -> Tensor (B,)`` (float64) for ``(B, C, H, W)``
or ``(C, H, W)`` tensors in [0, 1] (clamp restored outputs first). Integer images
are scaled to [0, 1] first, as skimage infers their range: uint8 by 255, uint16
by 65535 (other integer dtypes are a ValueError). Computed in float64 so they
agree with ``skimage.metrics``:

* ``psnr`` = ``peak_signal_noise_ratio(gt, pred, data_range=1)``.
* ``ssim`` (default) = ``structural_similarity(channel_axis=-1, data_range=1)``:
  a 7x7 uniform window with sample covariance, averaged over the valid region
  and the channels (the setting PromptIR's evaluation uses).
  ``gaussian=True`` is the other convention of the field (Wang et al. 2004,
  BasicSR): an 11x11 Gaussian window of sigma 1.5 and population covariance,
  equal to skimage's ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``.
* ``psnr_y`` / ``ssim_y``: the same on the BT.601 luma of MATLAB's ``rgb2ycbcr``,
  ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` (not rounded).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "psnr_y", "ssim_y", "rgb_to_y", "on_luma", "as_unit_float"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)


# Integer dtypes and the value that maps to 1 (skimage's data range for them).
_INTEGER_RANGES: dict[str, float] = {"uint8": 255.0, "uint16": 65535.0}


def as_unit_float(x: Any, which: str, name: str = "metric") -> torch.Tensor:
    """A float64 tensor in [0, 1]: uint8/uint16 images are scaled as skimage does.

    Treating a uint8 image as range 1 would report a PSNR some 48 dB off.
    """
    x = torch.as_tensor(x)
    if x.is_floating_point() or x.dtype == torch.bool:
        return x.to(torch.float64)
    dtype = str(x.dtype).removeprefix("torch.")
    if dtype not in _INTEGER_RANGES:
        raise ValueError(f"{name}: {which} has dtype {dtype}; give floats in [0, 1] or uint8/uint16 images")
    return x.to(torch.float64) / _INTEGER_RANGES[dtype]


def _prepare(pred: Any, target: Any, crop_border: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = as_unit_float(pred, "pred", name), as_unit_float(target, "target", name)
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.dim() == 3:
        pred, target = pred[None], target[None]
    if pred.dim() != 4:
        raise ValueError(f"{name}: expected (B, C, H, W) or (C, H, W) tensors, got shape {tuple(pred.shape)}")
    if crop_border < 0:
        raise ValueError(f"{name}: crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if min(pred.shape[-2:]) <= 2 * crop_border:
            raise ValueError(f"{name}: crop_border {crop_border} leaves nothing of a {tuple(pred.shape[-2:])} image")
        pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
        target = target[..., crop_border:-crop_border, crop_border:-crop_border]
    return pred, target


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (MATLAB ``rgb2ycbcr``) of RGB in [0, 1], in [16/255, 235/255]; (B, 3, H, W) -> (B, 1, H, W)."""
    if img.shape[-3] != 3:
        raise ValueError(f"Y needs RGB input, got {img.shape[-3]} channels")
    weights = torch.tensor(_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(3, 1, 1)
    return ((img * weights).sum(-3, keepdim=True) + 16.0) / 255.0


def psnr(pred: Any, target: Any, crop_border: int = 0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (inf where the images are equal)."""
    pred, target = _prepare(pred, target, crop_border, "psnr")
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)


def _window(gaussian: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if gaussian:
        x = torch.arange(-5, 6, dtype=dtype, device=device)  # radius int(3.5 * 1.5 + 0.5) = 5
        w = torch.exp(-0.5 * (x / 1.5) ** 2)
        return w / w.sum()
    return torch.full((7,), 1.0 / 7.0, dtype=dtype, device=device)


def _ssim_per_image(pred: torch.Tensor, target: torch.Tensor, gaussian: bool, name: str) -> torch.Tensor:
    window = _window(gaussian, pred.dtype, pred.device)
    size = window.numel()
    if min(pred.shape[-2:]) < size:
        raise ValueError(f"{name}: images of {tuple(pred.shape[-2:])} are smaller than the {size}x{size} window")
    channels = pred.shape[1]
    stack = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    # Valid filtering only: skimage crops the (size - 1) / 2 border where its padding would matter.
    # (avg_pool2d and unfold @ taps are several times faster than a grouped float64 conv2d on the CPU.)
    if gaussian:
        out = stack.unfold(-1, size, 1) @ window
        out = out.unfold(-2, size, 1) @ window
    else:
        out = F.avg_pool2d(F.avg_pool2d(stack, (1, size), stride=1), (size, 1), stride=1)
    ux, uy, uxx, uyy, uxy = out.split(channels, dim=1)
    cov_norm = 1.0 if gaussian else size * size / (size * size - 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def ssim(pred: Any, target: Any, crop_border: int = 0, *, gaussian: bool = False) -> torch.Tensor:
    """Structural similarity per image, averaged over channels (see the module doc for the window)."""
    pred, target = _prepare(pred, target, crop_border, "ssim")
    return _ssim_per_image(pred, target, gaussian, "ssim")


def psnr_y(pred: Any, target: Any, crop_border: int = 0) -> torch.Tensor:
    """PSNR on the BT.601 luma."""
    pred, target = _prepare(pred, target, crop_border, "psnr_y")
    mse = (rgb_to_y(pred) - rgb_to_y(target)).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)


def ssim_y(pred: Any, target: Any, crop_border: int = 0, *, gaussian: bool = False) -> torch.Tensor:
    """SSIM on the BT.601 luma."""
    pred, target = _prepare(pred, target, crop_border, "ssim_y")
    return _ssim_per_image(rgb_to_y(pred), rgb_to_y(target), gaussian, "ssim_y")


def on_luma(metric: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``metric`` computed on the BT.601 luma of both images (``eval.color: y`` for any metric).

    ``on_luma(psnr)`` equals :func:`psnr_y` bit for bit: both convert to float64, then to Y.
    """

    def on_y(pred: Any, target: Any, crop_border: int = 0) -> torch.Tensor:
        pred, target = as_unit_float(pred, "pred"), as_unit_float(target, "target")
        return metric(rgb_to_y(pred), rgb_to_y(target), crop_border=crop_border)

    # The metric's declared attributes (its higher_is_better) hold on the luma too.
    return functools.update_wrapper(on_y, metric, assigned=(), updated=("__dict__",))


# The Metric contract's direction: every score here improves upwards.
psnr.higher_is_better = True  # type: ignore[attr-defined]
ssim.higher_is_better = True  # type: ignore[attr-defined]
psnr_y.higher_is_better = True  # type: ignore[attr-defined]
ssim_y.higher_is_better = True  # type: ignore[attr-defined]
