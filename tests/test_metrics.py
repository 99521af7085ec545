"""Metrics agree with skimage.metrics on real photographs; per-image, crop border, Y."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from restorekit import build
from restorekit.metrics import on_luma, psnr, psnr_y, rgb_to_y, ssim, ssim_y
from restorekit.registry import registry

PHOTOS = ("astronaut", "coffee", "chelsea")


def numpy_y(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr luma of an (H, W, 3) RGB image in [0, 1], divided by 255."""
    return (16 + 65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255


@pytest.fixture(scope="module", params=PHOTOS)
def pair(request):
    clean = getattr(data, request.param)().astype(np.float64) / 255
    rng = np.random.default_rng(PHOTOS.index(request.param))
    noisy = np.clip(clean + rng.normal(0, 20 / 255, clean.shape), 0, 1)
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1).float()  # noqa: E731
    # The float32 tensors are what a model produces; skimage sees the same values.
    clean_t, noisy_t = as_tensor(clean), as_tensor(noisy)
    return clean_t, noisy_t, clean_t.permute(1, 2, 0).double().numpy(), noisy_t.permute(1, 2, 0).double().numpy()


def test_psnr_matches_skimage(pair):
    clean_t, noisy_t, clean, noisy = pair
    ours = psnr(noisy_t, clean_t)
    assert ours.shape == (1,)
    assert abs(ours.item() - peak_signal_noise_ratio(clean, noisy, data_range=1)) < 1e-4


def test_ssim_matches_skimage_uniform_window(pair):
    clean_t, noisy_t, clean, noisy = pair
    reference = structural_similarity(clean, noisy, channel_axis=-1, data_range=1)
    assert abs(ssim(noisy_t, clean_t).item() - reference) < 1e-4


def test_ssim_matches_skimage_gaussian_window(pair):
    clean_t, noisy_t, clean, noisy = pair
    reference = structural_similarity(
        clean, noisy, channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert abs(ssim(noisy_t, clean_t, gaussian=True).item() - reference) < 1e-4


def test_y_metrics_match_skimage_on_luma(pair):
    clean_t, noisy_t, clean, noisy = pair
    y_clean, y_noisy = numpy_y(clean), numpy_y(noisy)
    assert abs(psnr_y(noisy_t, clean_t).item() - peak_signal_noise_ratio(y_clean, y_noisy, data_range=1)) < 1e-4
    assert abs(ssim_y(noisy_t, clean_t).item() - structural_similarity(y_clean, y_noisy, data_range=1)) < 1e-4


def test_rgb_to_y_range_and_convention():
    black, white = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    assert torch.allclose(rgb_to_y(black), torch.full((1, 1, 2, 2), 16 / 255))
    assert torch.allclose(rgb_to_y(white), torch.full((1, 1, 2, 2), 235 / 255), atol=1e-6)


def test_per_image_batch_and_crop_border():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 40, 48, generator=gen)
    pred = (target + 0.05 * torch.randn(3, 3, 40, 48, generator=gen)).clamp(0, 1)
    for metric in (psnr, ssim, psnr_y, ssim_y):
        batch = metric(pred, target, crop_border=4)
        assert batch.shape == (3,) and batch.dtype == torch.float64
        singles = torch.cat([metric(pred[i], target[i], crop_border=4) for i in range(3)])
        assert torch.allclose(batch, singles)
        cropped = metric(pred[..., 4:-4, 4:-4], target[..., 4:-4, 4:-4])
        assert torch.allclose(batch, cropped)
        assert not torch.allclose(batch, metric(pred, target))


def test_identical_images():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ssim(x, x, gaussian=True), torch.ones(2, dtype=torch.float64))


def test_psnr_known_value():
    target = torch.zeros(1, 3, 8, 8)
    pred = torch.full((1, 3, 8, 8), 0.1)
    assert math.isclose(psnr(pred, target).item(), 20.0, abs_tol=1e-6)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 9))
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(torch.rand(3, 9, 9), torch.rand(3, 9, 9), gaussian=True)
    with pytest.raises(ValueError, match="crop_border"):
        psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 8), crop_border=4)


def test_registered_and_specs():
    metrics = registry("metric")
    assert metrics.get("psnr") is psnr and metrics.get("ssim_y") is ssim_y
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    y = (x + 0.1).clamp(0, 1)
    assert torch.equal(build("metric", {"type": "ssim", "gaussian": True})(y, x), ssim(y, x, gaussian=True))
    assert build("metric", "psnr") is psnr  # the function itself: build never calls a metric


def test_on_luma_equals_the_y_metrics_bit_for_bit():
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(3))
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    assert torch.equal(on_luma(psnr)(y, x, crop_border=2), psnr_y(y, x, crop_border=2))
    assert torch.equal(on_luma(ssim)(y, x), ssim_y(y, x))


def test_metrics_on_device(device):
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    y = (x + 0.05).clamp(0, 1)
    for metric in (psnr, ssim, ssim_y):
        assert torch.allclose(metric(y.to(device), x.to(device)).cpu(), metric(y, x))


@pytest.mark.parametrize("dtype, peak", [(np.uint8, 255), (np.uint16, 65535)])
def test_integer_images_are_scaled_like_skimage(dtype, peak):
    rng = np.random.default_rng(5)
    clean = rng.integers(0, peak + 1, (24, 28, 3)).astype(dtype)
    noisy = np.clip(clean.astype(np.int64) + rng.integers(-peak // 10, peak // 10, clean.shape), 0, peak).astype(dtype)
    as_chw = lambda a: torch.from_numpy(a).permute(2, 0, 1)  # noqa: E731
    reference = peak_signal_noise_ratio(clean, noisy)  # skimage infers the data range from the dtype
    assert abs(psnr(as_chw(noisy), as_chw(clean)).item() - reference) < 1e-9
    assert abs(psnr(noisy.transpose(2, 0, 1), clean.transpose(2, 0, 1)).item() - reference) < 1e-9  # numpy too
    reference = structural_similarity(clean, noisy, channel_axis=-1, data_range=peak)
    assert abs(ssim(as_chw(noisy), as_chw(clean)).item() - reference) < 1e-9


def test_other_integer_dtypes_are_rejected():
    with pytest.raises(ValueError, match="dtype int32"):
        psnr(torch.zeros(3, 8, 8, dtype=torch.int32), torch.zeros(3, 8, 8, dtype=torch.int32))


def test_metric_spec_with_a_misspelled_keyword_is_an_error():
    from restorekit.errors import BuildError

    with pytest.raises(
        BuildError,
        match=r"'gausian'; did you mean 'gausian' -> 'gaussian'\? accepted: pred, target, crop_border, gaussian",
    ):
        build("metric", {"type": "ssim", "gausian": True})
