"""Degradations: shape/range/determinism properties, identities, noise statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit import build
from restorekit.catalog import BUILTINS
from restorekit.data.degradations import (
    Chain,
    DefocusBlur,
    GaussianNoise,
    Haze,
    LowLight,
    MotionBlur,
    RainStreaks,
    build_degradation,
)
from restorekit.errors import BuildError

NAMES = sorted(BUILTINS["degradation"])
RANDOM_NAMES = [n for n in NAMES if n != "identity"]


def image(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.sampled_from([None, 2]),
    height=st.integers(8, 40),
    width=st.integers(8, 40),
)
def test_keeps_shape_dtype_range_and_is_deterministic(name, seed, batch, height, width):
    deg = build("degradation", name)
    shape = (3, height, width) if batch is None else (batch, 3, height, width)
    x = image(seed, shape)
    y = deg(x, rng=seed)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, deg(x, rng=seed))
    assert torch.equal(x, image(seed, shape)), "the input must not be modified"


@pytest.mark.parametrize("name", RANDOM_NAMES)
def test_differs_across_seeds(name):
    deg = build("degradation", name)
    x = image(0, (3, 48, 48))
    outputs = [deg(x, rng=s) for s in range(4)]
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])


@pytest.mark.parametrize("name", NAMES)
def test_float64_and_generator(name):
    deg = build("degradation", name)
    x = image(1, (3, 24, 24)).double()
    gen = torch.Generator().manual_seed(5)
    y = deg(x, rng=gen)
    assert y.dtype == torch.float64
    again = deg(x, rng=torch.Generator().manual_seed(5))
    assert torch.equal(y, again)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), height=st.integers(4, 32), width=st.integers(4, 32))
def test_zero_strength_is_identity(seed, height, width):
    x = image(seed, (3, height, width))
    assert torch.equal(Haze(beta=0)(x, seed), x)
    assert torch.equal(GaussianNoise(sigma=0, mode="uint8")(x, seed), x)
    assert torch.equal(GaussianNoise(sigma=0, mode="float")(x, seed), x)
    assert torch.equal(DefocusBlur(radius=0)(x, seed), x)
    assert torch.equal(LowLight(gamma=1, scale=1, photons=0, read_noise=0)(x, seed), x)
    assert torch.allclose(MotionBlur(size=1)(x, seed), x, atol=1e-6)
    assert torch.equal(RainStreaks(intensity=0)(x, seed), x)


def test_float_noise_statistics():
    x = torch.full((3, 160, 160), 0.5)
    y = GaussianNoise(sigma=25, mode="float")(x, rng=0)
    residual = (y - x) * 255
    assert abs(residual.mean().item()) < 0.3
    assert abs(residual.std().item() - 25) < 0.5


def test_uint8_noise_follows_the_field_pipeline():
    """Quantise, add sigma * N(0, 1), clip, truncate to uint8 (PromptIR's np pipeline)."""
    x = torch.full((3, 160, 160), 0.5)
    y = GaussianNoise(sigma=25, mode="uint8")(x, rng=0)
    levels = y * 255
    assert torch.equal(levels, levels.round()), "uint8 mode stays on the 8-bit grid"
    residual = levels - torch.round(x * 255)
    # truncation toward zero shifts the mean by -0.5 (a uniform fractional part)
    assert abs(residual.mean().item() + 0.5) < 0.3
    assert abs(residual.std().item() - 25) < 0.5
    dark = GaussianNoise(sigma=50, mode="uint8")(torch.zeros(3, 64, 64), rng=1)
    assert 0.45 < (dark == 0).float().mean().item() < 0.6, "about half the noise is clipped at 0"


def test_uint8_numpy_array_in_and_out():
    arr = (image(3, (32, 32, 3)) * 255).round().numpy().astype(np.uint8)
    out = GaussianNoise(sigma=15)(arr, rng=4)
    assert out.dtype == np.uint8 and out.shape == arr.shape
    assert not np.array_equal(out, arr)
    assert np.array_equal(GaussianNoise(sigma=0)(arr, rng=4), arr)


def test_sigma_list_draws_each_level():
    x = torch.full((3, 64, 64), 0.5)
    deg = GaussianNoise(sigma=[15, 25, 50], mode="float")
    seen = {min((15, 25, 50), key=lambda s: abs(s - ((deg(x, i) - x) * 255).std().item())) for i in range(30)}
    assert seen == {15, 25, 50}


def test_unseeded_calls_follow_torch_manual_seed():
    x = image(0, (3, 16, 16))
    torch.manual_seed(11)
    a = GaussianNoise()(x)
    torch.manual_seed(11)
    assert torch.equal(a, GaussianNoise()(x))


def test_haze_darkens_contrast_toward_airlight():
    x = image(2, (3, 64, 64))
    y = Haze(beta=2.0, airlight=1.0)(x, rng=0)
    assert y.mean() > x.mean() and y.std() < x.std()


def test_low_light_darkens():
    x = image(2, (3, 64, 64))
    assert LowLight()(x, rng=0).mean() < 0.5 * x.mean()


def test_rain_brightens_sparse_streaks():
    x = torch.full((3, 96, 96), 0.2)
    y = RainStreaks(density=0.004)(x, rng=0)
    changed = (y - x).abs().amax(0) > 0.05
    assert 0.005 < changed.float().mean() < 0.6
    assert (y >= x - 1e-6).all(), "screen blending only brightens"


def test_blur_kernels_are_normalised():
    gen = torch.Generator().manual_seed(0)
    k = MotionBlur(size=15).kernel(gen)
    assert k.shape == (15, 15) and abs(k.sum().item() - 1) < 1e-5 and (k >= 0).all()
    disk = DefocusBlur.disk(3.0)
    assert abs(disk.sum().item() - 1) < 1e-5 and disk[3, 3] == disk.max()
    flat = torch.full((3, 32, 32), 0.7)
    assert torch.allclose(MotionBlur()(flat, 0), flat, atol=1e-5)
    assert torch.allclose(DefocusBlur(kernel="gaussian")(flat, 0), flat, atol=1e-5)


def test_jpeg_quality_changes_error():
    x = image(5, (3, 64, 64))
    low = (build("degradation", {"type": "jpeg", "quality": 10})(x, 0) - x).abs().mean()
    high = (build("degradation", {"type": "jpeg", "quality": 95})(x, 0) - x).abs().mean()
    assert low > high > 0


def test_specs_and_chains():
    chain = build_degradation([{"type": "noise", "sigma": 0}, {"type": "haze", "beta": 0}])
    assert isinstance(chain, Chain)
    x = image(0, (3, 16, 16))
    assert torch.equal(chain(x, 1), x)
    assert torch.equal(build_degradation("identity")(x), x)


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"type": "noise", "mode": "int"}, "mode"),
        ({"type": "noise", "sigma": -1}, "sigma"),
        ({"type": "haze", "beta": [2.0, 1.0]}, "'beta'"),
        ({"type": "rain", "blend": "multiply"}, "blend"),
        ({"type": "jpeg", "quality": 0}, "'quality'"),
        ({"type": "defocus_blur", "kernel": "box"}, "kernel"),
        ({"type": "haze", "depth": 1}, "accepted: beta, airlight"),
    ],
)
def test_bad_parameters_are_build_errors(spec, words):
    with pytest.raises(BuildError, match=words):
        build("degradation", spec)


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="expects"):
        GaussianNoise()(torch.rand(16, 16))
    with pytest.raises(TypeError, match="float"):
        GaussianNoise()(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_same_result_on_every_device(device):
    x = image(0, (2, 3, 32, 32))
    for deg in (GaussianNoise(sigma=25), Haze(), RainStreaks(), DefocusBlur()):
        on_device = deg(x.to(device), rng=3)
        assert on_device.device.type == device
        assert torch.allclose(on_device.cpu(), deg(x, rng=3), atol=1e-5)


def test_uint16_numpy_array_is_scaled_by_65535():
    arr = (image(5, (16, 16, 3)).numpy() * 65535).round().astype(np.uint16)
    assert np.array_equal(build("degradation", "identity")(arr, 1), arr)
    out = GaussianNoise(sigma=15, mode="float")(arr, rng=2)
    assert out.dtype == np.uint16
    # sigma is in 0-255 units: about 15/255 of the full range, not clipped to 0/1.
    assert 0.03 < np.std(out.astype(np.float64) - arr) / 65535 < 0.08


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.uint32, np.int64])
def test_other_integer_arrays_are_refused(dtype):
    with pytest.raises(TypeError, match=f"got dtype {np.dtype(dtype).name}"):
        GaussianNoise()(np.full((8, 8, 3), 100, dtype), 1)


# -- each formula against a value computed apart -------------------------------------------------
# A seed becomes the generator Generator().manual_seed(derive_seed(seed)) (data/seeding.py); fixed
# parameters draw nothing, so the draws of a degradation can be replayed here in the same order.
def replay(seed: int) -> torch.Generator:
    from restorekit.data.seeding import derive_seed

    return torch.Generator().manual_seed(derive_seed(seed))


def test_noise_formulas_in_numpy():
    x = image(7, (3, 9, 11))
    noise = torch.randn(x.shape, generator=replay(3)).numpy().astype(np.float64)
    quantised = np.round(x.numpy().astype(np.float64) * 255)
    want_uint8 = np.floor(np.clip(quantised + 25 * noise, 0, 255)) / 255  # PromptIR's astype(np.uint8) truncates
    np.testing.assert_allclose(GaussianNoise(sigma=25, mode="uint8")(x, 3).numpy(), want_uint8, atol=1e-6)
    want_float = np.clip(x.numpy() + 25 * noise / 255, 0, 1)
    np.testing.assert_allclose(GaussianNoise(sigma=25, mode="float")(x, 3).numpy(), want_float, atol=1e-6)


def _correlate_reflect(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per-channel correlation of (C, H, W) with (kh, kw), edges reflected (numpy, plain loops)."""
    kh, kw = kernel.shape
    padded = np.pad(img, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)), mode="reflect")
    out = np.zeros_like(img, dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            out += kernel[i, j] * padded[:, i : i + img.shape[1], j : j + img.shape[2]]
    return out


def test_gaussian_defocus_blurs_with_sigma_equal_to_the_radius():
    x = image(8, (3, 16, 17))
    taps = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)  # radius ceil(3 sigma) = 5 at sigma 1.5
    taps /= taps.sum()
    want = _correlate_reflect(x.numpy().astype(np.float64), np.outer(taps, taps))
    np.testing.assert_allclose(DefocusBlur(radius=1.5, kernel="gaussian")(x, 0).numpy(), want, atol=1e-5)


def test_disk_kernel_holds_the_covered_fraction_of_each_pixel():
    # radius 1: a 3 x 3 kernel; count the 8 x 8 sub-pixel centres inside the unit circle per pixel
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    counts = np.array(
        [[sum((i + a) ** 2 + (j + b) ** 2 <= 1 for a in sub for b in sub) for j in (-1, 0, 1)] for i in (-1, 0, 1)]
    )
    assert counts[1, 1] == 64 and counts[0, 0] < counts[0, 1] < 64  # full centre, partial edges and corners
    np.testing.assert_allclose(DefocusBlur.disk(1.0).numpy(), counts / counts.sum(), atol=1e-7)
    x = image(9, (3, 12, 12))
    want = _correlate_reflect(x.numpy().astype(np.float64), counts / counts.sum())
    np.testing.assert_allclose(DefocusBlur(radius=1.0)(x, 0).numpy(), want, atol=1e-5)


def test_motion_blur_correlates_with_its_kernel_on_both_paths():
    """Kernels up to 11 x 11 run as a conv, larger ones by FFT: both are the same correlation."""
    x = image(10, (3, 30, 31))
    for size in (7, 15):  # 49 and 225 taps
        deg = MotionBlur(size=size, curvature=0.8)
        kernel = deg.kernel(replay(4)).numpy().astype(np.float64)
        assert not np.allclose(kernel, kernel[::-1, ::-1])  # not symmetric: a flip would show
        np.testing.assert_allclose(deg(x, 4).numpy(), _correlate_reflect(x.numpy(), kernel), atol=1e-5)


def test_straight_motion_kernel_splats_a_centred_line():
    """Curvature 0: 64 unit steps along one heading, centred, scaled to span the kernel, splatted bilinearly."""
    gen = replay(5)
    heading = 2 * np.pi * torch.rand((), generator=gen).item()  # size and curvature fixed: the first draw
    steps = np.arange(1, 65)
    path_y, path_x = steps * np.sin(heading), steps * np.cos(heading)
    path_y, path_x = path_y - path_y.mean(), path_x - path_x.mean()
    scale = 4 / max(np.abs(path_y).max(), np.abs(path_x).max())  # (9 - 1) / 2 over the extent
    want = np.zeros((9, 9))
    for py, px in zip(path_y * scale + 4, path_x * scale + 4):
        y0, x0 = int(np.floor(py)), int(np.floor(px))
        for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
            for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                if 0 <= yy < 9 and 0 <= xx < 9:
                    want[yy, xx] += wy * wx
    np.testing.assert_allclose(
        MotionBlur(size=9, curvature=0.0).kernel(replay(5)).numpy(), want / want.sum(), atol=1e-6
    )


def test_haze_is_the_scattering_model_over_the_depth_proxy():
    x = image(11, (3, 20, 24))
    gen = replay(6)  # beta and airlight fixed: the depth proxy draws first
    horizon = 0.25 + 0.45 * torch.rand((), generator=gen).item()
    tilt = 0.3 * (2 * torch.rand((), generator=gen).item() - 1)
    field = torch.rand((1, 1, 4, 4), generator=gen)
    ys, xs = np.linspace(0, 1, 20)[:, None], np.linspace(-0.5, 0.5, 24)[None, :]
    vertical = np.clip(1 - (ys - horizon - tilt * xs) / (1 - horizon), 0, 1)
    smooth = torch.nn.functional.interpolate(field, size=(20, 24), mode="bicubic", align_corners=True)[0, 0]
    pooled = torch.nn.functional.adaptive_avg_pool2d(x.mean(0)[None, None], (16, 16))
    luminance = torch.nn.functional.interpolate(pooled, size=(20, 24), mode="bilinear", align_corners=False)[0, 0]
    depth = np.clip(0.6 * vertical + 0.25 * luminance.numpy() + 0.25 * smooth.numpy(), 0, 1)
    t = np.exp(-1.2 * depth)[None]
    want = x.numpy() * t + 0.8 * (1 - t)  # I = J t + A (1 - t)
    np.testing.assert_allclose(Haze(beta=1.2, airlight=0.8)(x, 6).numpy(), want, atol=1e-5)


def test_low_light_is_a_gamma_curve_then_read_noise():
    x = image(12, (3, 8, 8))
    dark = 0.3 * x.numpy().astype(np.float64) ** 2.2
    np.testing.assert_allclose(LowLight(gamma=2.2, scale=0.3, photons=0, read_noise=0)(x, 1).numpy(), dark, atol=1e-6)
    read = 0.02 * torch.randn(x.shape, generator=replay(1)).numpy()
    got = LowLight(gamma=2.2, scale=0.3, photons=0, read_noise=0.02)(x, 1).numpy()
    np.testing.assert_allclose(got, np.clip(dark + read, 0, 1), atol=1e-6)


@pytest.mark.parametrize("blend", ["screen", "add"])
def test_rain_blends_its_streak_layer(blend):
    x = image(13, (3, 24, 24))
    deg = RainStreaks(density=0.01, length=8.0, angle=10.0, width=1.2, intensity=0.7, blend=blend)
    rain = deg.streak_layer(24, 24, replay(2)).numpy()[None]  # one layer, fixed: the streaks draw first
    assert rain.max() > 0.3
    want = 1 - (1 - x.numpy()) * (1 - rain) if blend == "screen" else np.clip(x.numpy() + rain, 0, 1)
    np.testing.assert_allclose(deg(x, 2).numpy(), want, atol=1e-6)


def test_jpeg_is_a_pil_round_trip_at_the_quality():
    import io

    from PIL import Image

    x = image(14, (3, 16, 16))
    hwc = np.round(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(hwc).save(buffer, format="JPEG", quality=40)
    want = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).astype(np.float32) / 255
    got = build("degradation", {"type": "jpeg", "quality": 40})(x, 0)
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), want)
