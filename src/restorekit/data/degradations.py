"""Synthetic degradations on float images in [0, 1], seeded and deterministic.

Every degradation is ``Deg(**params)`` and ``deg(img, rng=None)``: ``img`` is a
``(C, H, W)`` or ``(B, C, H, W)`` tensor in [0, 1] (or a uint8/float numpy array
``(H, W, C)`` / ``(B, H, W, C)``, returned in the same layout and dtype); ``rng``
is an int seed or a ``torch.Generator``. The same seed gives the same output;
the output keeps shape, dtype and range. Random numbers are drawn on the CPU, so
a seed gives the same degradation on every device.

Parameters take a number (fixed) or a ``[low, high]`` range drawn uniformly per
image; the noise ``sigma`` instead takes a list of levels to choose from (the
field trains on sigma 15/25/50). See ``docs/degradations.md``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from restorekit.building import build
from restorekit.data.seeding import as_generator
from restorekit.errors import BuildError

Number = float | int
Range = Number | Sequence[Number]

__all__ = [
    "Degradation",
    "Identity",
    "GaussianNoise",
    "RainStreaks",
    "Haze",
    "MotionBlur",
    "DefocusBlur",
    "LowLight",
    "JPEG",
    "Chain",
    "build_degradation",
]


# -- parameter helpers --------------------------------------------------------------
def _check_range(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> Range:
    """A number or a [low, high] pair inside [low, high]; a clear error otherwise."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise BuildError(f"degradation parameter {name!r} must be a number or [low, high], got {value!r}")
    if len(values) == 2 and values[0] > values[1]:
        raise BuildError(f"degradation parameter {name!r}: range {value!r} has low > high")
    if any(not low <= v <= high for v in values):
        raise BuildError(f"degradation parameter {name!r}={value!r} is outside [{low}, {high}]")
    return tuple(values) if len(values) == 2 else values[0]


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=gen.device)


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=gen.device)


def _uniform(value: Range, gen: torch.Generator) -> float:
    """Draw from a [low, high] range; a fixed number is returned as is (no draw)."""
    if isinstance(value, tuple):
        low, high = value
        return float(low + (high - low) * _rand(gen).item())
    return float(value)


def _gaussian_kernel1d(sigma: float, radius: int | None = None) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma))) if radius is None else radius
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def _pad_mode(size: int, pad: int) -> str:
    return "reflect" if pad < size else "replicate"


def _convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel 2-D convolution of ``x`` (C, H, W) with ``kernel`` (kh, kw), edges reflected."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    channels = x.shape[0]
    mode = _pad_mode(min(x.shape[-2:]), max(ph, pw))
    padded = F.pad(x[None], (pw, pw, ph, ph), mode=mode)[0]
    if kh * kw <= 121:
        weight = kernel.to(x)[None, None].expand(channels, 1, kh, kw)
        return F.conv2d(padded[None], weight, groups=channels)[0]
    # Large kernels: FFT correlation, several times faster than a direct conv on the CPU.
    size = padded.shape[-2:]
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(torch.flip(kernel.to(x), (0, 1)), s=size)
    return torch.fft.irfft2(spectrum, s=size)[..., kh - 1 :, kw - 1 :]


def _blur_separable(x: torch.Tensor, k1d: torch.Tensor) -> torch.Tensor:
    """Separable blur of a (C, H, W) map with a 1-D kernel, edges reflected."""
    r = k1d.numel() // 2
    channels = x.shape[0]
    k = k1d.to(x)
    mode = _pad_mode(min(x.shape[-2:]), r)
    y = F.pad(x[None], (r, r, r, r), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return y[0]


def _splat(
    points_y: torch.Tensor, points_x: torch.Tensor, weights: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Bilinear splatting of weighted points into an (H, W) map (deterministic on the CPU)."""
    y0, x0 = points_y.floor(), points_x.floor()
    fy, fx = points_y - y0, points_x - x0
    out = torch.zeros(height * width, dtype=torch.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = (y0 + dy).long(), (x0 + dx).long()
            w = weights * wy * wx
            keep = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width) & (w > 0)
            out.index_add_(0, (yy * width + xx)[keep], w[keep].float())
    return out.view(height, width)


# -- base ---------------------------------------------------------------------------
# numpy integer dtypes a degradation accepts, and the value that maps to 1.
_ARRAY_PEAKS: dict[str, float] = {"uint8": 255.0, "uint16": 65535.0}


class Degradation:
    """Base class: subclasses implement :meth:`apply` on one ``(C, H, W)`` image."""

    def __call__(self, img: Any, rng: Any = None) -> Any:
        if isinstance(img, np.ndarray):
            return self._call_array(img, rng)
        if not torch.is_tensor(img):
            raise TypeError(f"{type(self).__name__} expects a tensor or a numpy array, got {type(img).__name__}")
        if img.dim() not in (3, 4):
            raise ValueError(f"{type(self).__name__} expects (C, H, W) or (B, C, H, W), got shape {tuple(img.shape)}")
        if not img.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a float tensor in [0, 1], got {img.dtype}")
        gen = as_generator(rng)
        if gen.device.type != "cpu":
            raise ValueError(
                "degradations draw their random numbers on the CPU: pass a CPU torch.Generator or an int seed"
            )
        batch = img if img.dim() == 4 else img[None]
        work_dtype = torch.float64 if img.dtype == torch.float64 else torch.float32
        outs = [self.apply(x.to(work_dtype), gen).clamp(0, 1) for x in batch]
        out = torch.stack(outs).to(dtype=img.dtype, device=img.device)
        return out if img.dim() == 4 else out[0]

    def _call_array(self, arr: np.ndarray, rng: Any) -> np.ndarray:
        """numpy (H, W, C) or (B, H, W, C), uint8, uint16 or float in [0, 1], same layout and dtype back.

        Integer images are scaled by their full range (255, 65535) and back; any other
        integer dtype has no agreed range, so it is refused rather than read as [0, 1].
        """
        if arr.ndim not in (3, 4):
            raise ValueError(f"{type(self).__name__} expects a (H, W, C) or (B, H, W, C) array, got {arr.shape}")
        peak = _ARRAY_PEAKS.get(arr.dtype.name)
        if peak is None and not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(
                f"{type(self).__name__} expects a uint8, uint16 or float array in [0, 1], got dtype {arr.dtype}"
            )
        x = torch.from_numpy(arr.astype(np.float32) / peak if peak else np.asarray(arr, np.float32))
        x = x.movedim(-1, -3)
        y = self(x, rng).movedim(-3, -1).numpy()
        if peak:
            return np.clip(np.round(y * peak), 0, peak).astype(arr.dtype)
        return y.astype(arr.dtype)

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class Identity(Degradation):
    """No degradation (a clean baseline; similarity 1 in the robustness probe)."""

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return x


class GaussianNoise(Degradation):
    """Additive white Gaussian noise, sigma in 0-255 units.

    ``mode='uint8'`` is the field's pipeline (PromptIR, AirNet): the image is
    quantised to uint8, noise added, clipped to [0, 255] and truncated to uint8
    (``np.clip(x + n * sigma, 0, 255).astype(np.uint8)``). ``mode='float'`` adds
    the noise to the float image and clips. ``sigma`` is a number or a list of
    levels, one chosen per image. Sigma 0 returns the image unchanged.
    """

    def __init__(self, sigma: Number | Sequence[Number] = 25, mode: str = "uint8") -> None:
        levels = list(sigma) if isinstance(sigma, (list, tuple)) else [sigma]
        if not levels or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 for s in levels):
            raise BuildError(f"noise sigma must be a number >= 0 or a list of them, got {sigma!r}")
        if mode not in ("uint8", "float"):
            raise BuildError(f"noise mode must be 'uint8' or 'float', got {mode!r}")
        self.sigma, self.mode = sigma, mode
        self._levels = [float(s) for s in levels]

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if len(self._levels) == 1:
            sigma = self._levels[0]
        else:
            sigma = self._levels[int(torch.randint(len(self._levels), (), generator=gen, device=gen.device))]
        if sigma == 0:
            return x
        noise = _randn(gen, *x.shape).to(x) * sigma
        if self.mode == "float":
            return x + noise / 255.0
        quantised = torch.round(x * 255.0)
        return torch.floor((quantised + noise).clamp(0, 255)) / 255.0


class RainStreaks(Degradation):
    """Synthetic rain: one or more layers of thin bright streaks, blended on top.

    Each layer draws ``density`` * H * W streaks (per pixel, so a patch and a
    full image look alike) at a common ``angle`` (degrees from vertical, each
    streak jittered by a few degrees), of ``length`` pixels (each streak 0.6-1.4x
    that), ``width`` pixels wide (a Gaussian profile), tapering at both ends,
    with peak brightness ``intensity``. ``blend='screen'`` gives
    ``1 - (1 - x)(1 - s)``, ``'add'`` gives ``x + s``.
    """

    def __init__(
        self,
        density: Range = (0.002, 0.006),
        length: Range = (12.0, 36.0),
        angle: Range = (-25.0, 25.0),
        width: Range = (1.0, 1.8),
        intensity: Range = (0.5, 0.9),
        layers: int | Sequence[int] = 1,
        blend: str = "screen",
    ) -> None:
        self.density = _check_range("density", density, 0.0, 1.0)
        self.length = _check_range("length", length, 1.0)
        self.angle = _check_range("angle", angle, -90.0, 90.0)
        self.width = _check_range("width", width, 0.1)
        self.intensity = _check_range("intensity", intensity, 0.0, 1.0)
        self.layers = _check_range("layers", layers, 0, 16)
        if blend not in ("screen", "add"):
            raise BuildError(f"rain blend must be 'screen' or 'add', got {blend!r}")
        self.blend = blend

    def streak_layer(self, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
        """One (H, W) layer of streaks with values in [0, 1]."""
        density, length = _uniform(self.density, gen), _uniform(self.length, gen)
        theta, thickness = math.radians(_uniform(self.angle, gen)), _uniform(self.width, gen)
        intensity = _uniform(self.intensity, gen)
        count = int(round(density * height * width))
        if count == 0 or intensity == 0:
            return torch.zeros(height, width)
        lengths = length * (0.6 + 0.8 * _rand(gen, count))
        angles = theta + math.radians(3.0) * _randn(gen, count)
        margin = length
        cy = _rand(gen, count) * (height + 2 * margin) - margin
        cx = _rand(gen, count) * (width + 2 * margin) - margin
        brightness = 0.6 + 0.4 * _rand(gen, count)
        samples = int(math.ceil(1.4 * length * 2)) + 2
        t = torch.linspace(-0.5, 0.5, samples)[None, :]
        offset = t * lengths[:, None]
        py = cy[:, None] + offset * torch.cos(angles)[:, None]
        px = cx[:, None] + offset * torch.sin(angles)[:, None]
        spacing = (lengths / (samples - 1))[:, None]  # so a streak deposits ~1 per pixel crossed
        taper = torch.sqrt((1 - (2 * t) ** 2).clamp(min=0))
        weights = spacing * taper * brightness[:, None]
        layer = _splat(py.flatten(), px.flatten(), weights.flatten(), height, width)
        k1d = _gaussian_kernel1d(thickness / 2.0)
        layer = _blur_separable(layer[None], k1d)[0] / k1d.max()
        return layer.clamp(0, 1) * intensity

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        layers = self.layers
        if isinstance(layers, tuple):
            count = int(torch.randint(int(layers[0]), int(layers[1]) + 1, (), generator=gen, device=gen.device))
        else:
            count = int(layers)
        rain = torch.zeros(x.shape[-2:])
        for _ in range(count):
            rain = torch.maximum(rain, self.streak_layer(x.shape[-2], x.shape[-1], gen))
        rain = rain.to(x)[None]
        if self.blend == "screen":
            return 1 - (1 - x) * (1 - rain)
        return x + rain


class Haze(Degradation):
    """Atmospheric scattering ``I = J t + A (1 - t)``, ``t = exp(-beta d)``.

    There are no depth maps, so ``d`` in [0, 1] is a proxy: a random horizon
    (far above it, nearer toward the bottom, with a random tilt), mixed with the
    image's blurred luminance (bright regions such as sky tend to be far) and a
    smooth random field. ``beta`` is the scattering coefficient (0 is the
    identity), ``airlight`` the atmospheric light A.
    """

    def __init__(self, beta: Range = (0.4, 1.6), airlight: Range = (0.7, 1.0)) -> None:
        self.beta = _check_range("beta", beta, 0.0)
        self.airlight = _check_range("airlight", airlight, 0.0, 1.0)

    @staticmethod
    def depth_proxy(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(H, W) depth in [0, 1] from a random horizon, luminance and a smooth field."""
        height, width = x.shape[-2:]
        horizon = 0.25 + 0.45 * _rand(gen).item()
        tilt = 0.3 * (2 * _rand(gen).item() - 1)
        ys = torch.linspace(0, 1, height)[:, None]
        xs = torch.linspace(-0.5, 0.5, width)[None, :]
        below = (ys - horizon - tilt * xs) / (1 - horizon)
        vertical = (1 - below).clamp(0, 1)
        grid = _rand(gen, 1, 1, 4, 4)
        smooth = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)[0, 0]
        coarse = F.adaptive_avg_pool2d(x.float().cpu().mean(0)[None, None], (16, 16))
        luminance = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        depth = 0.6 * vertical + 0.25 * luminance + 0.25 * smooth
        return depth.clamp(0, 1)

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        beta, airlight = _uniform(self.beta, gen), _uniform(self.airlight, gen)
        if beta == 0:
            return x
        depth = self.depth_proxy(x, gen).to(x)
        t = torch.exp(-beta * depth)[None]
        return x * t + airlight * (1 - t)


class MotionBlur(Degradation):
    """Blur along a random camera trajectory (a random walk with inertia).

    The trajectory is ``steps`` unit moves whose heading turns by a Gaussian of
    ``curvature`` radians per step; it is centred, scaled to fit a
    ``size`` x ``size`` kernel (odd, drawn per image) and splatted into it.
    """

    def __init__(self, size: Range = (9, 25), curvature: Range = (0.0, 0.6), steps: int = 64) -> None:
        self.size = _check_range("size", size, 1, 255)
        self.curvature = _check_range("curvature", curvature, 0.0)
        if not isinstance(steps, int) or steps < 2:
            raise BuildError(f"motion_blur steps must be an int >= 2, got {steps!r}")
        self.steps = steps

    def kernel(self, gen: torch.Generator) -> torch.Tensor:
        """A (k, k) kernel summing to one."""
        size = int(round(_uniform(self.size, gen))) | 1
        curvature = _uniform(self.curvature, gen)
        heading = 2 * math.pi * _rand(gen).item()
        turns = heading + torch.cumsum(curvature * _randn(gen, self.steps), 0)
        path_y = torch.cumsum(torch.sin(turns), 0)
        path_x = torch.cumsum(torch.cos(turns), 0)
        path_y, path_x = path_y - path_y.mean(), path_x - path_x.mean()
        extent = torch.maximum(path_y.abs().max(), path_x.abs().max()).clamp(min=1e-6)
        scale = (size - 1) / 2 / extent
        centre = (size - 1) / 2
        k = _splat(path_y * scale + centre, path_x * scale + centre, torch.ones(self.steps), size, size)
        return k / k.sum()

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return _convolve(x, self.kernel(gen))


class DefocusBlur(Degradation):
    """Out-of-focus blur: an anti-aliased disk of ``radius`` pixels, or a Gaussian.

    ``kernel='disk'`` (the lens aperture) or ``'gaussian'`` (sigma = radius).
    Radius 0 is the identity.
    """

    def __init__(self, radius: Range = (1.0, 4.0), kernel: str = "disk") -> None:
        self.radius = _check_range("radius", radius, 0.0, 64.0)
        if kernel not in ("disk", "gaussian"):
            raise BuildError(f"defocus_blur kernel must be 'disk' or 'gaussian', got {kernel!r}")
        self.kernel_type = kernel

    @staticmethod
    def disk(radius: float, supersample: int = 8) -> torch.Tensor:
        """A disk kernel whose edge pixels hold the covered fraction of their area."""
        r = int(math.ceil(radius - 0.5)) if radius > 0.5 else 0
        sub = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
        centres = torch.arange(-r, r + 1, dtype=torch.float64)
        coords = (centres[:, None] + sub[None, :]).flatten()
        inside = (coords[:, None] ** 2 + coords[None, :] ** 2) <= radius**2
        n = 2 * r + 1
        k = inside.view(n, supersample, n, supersample).double().mean((1, 3))
        if k.sum() == 0:
            k[r, r] = 1.0
        return (k / k.sum()).float()

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        radius = _uniform(self.radius, gen)
        if radius == 0:
            return x
        if self.kernel_type == "gaussian":
            return _blur_separable(x, _gaussian_kernel1d(radius))
        return _convolve(x, self.disk(radius))


class LowLight(Degradation):
    """Under-exposure: ``scale * x ** gamma``, then sensor shot and read noise.

    Shot noise is Poisson with ``photons`` expected photons at signal 1
    (0 switches it off); read noise is Gaussian with std ``read_noise`` (in [0, 1]
    units). ``gamma=1, scale=1, photons=0, read_noise=0`` is the identity.
    """

    def __init__(
        self,
        gamma: Range = (1.5, 2.5),
        scale: Range = (0.1, 0.4),
        photons: Range = (300.0, 3000.0),
        read_noise: Range = (0.002, 0.01),
    ) -> None:
        self.gamma = _check_range("gamma", gamma, 0.1, 10.0)
        self.scale = _check_range("scale", scale, 0.0, 1.0)
        self.photons = _check_range("photons", photons, 0.0)
        self.read_noise = _check_range("read_noise", read_noise, 0.0, 1.0)

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        gamma, scale = _uniform(self.gamma, gen), _uniform(self.scale, gen)
        photons, read = _uniform(self.photons, gen), _uniform(self.read_noise, gen)
        y = scale * x.clamp(0, 1) ** gamma
        if photons > 0:
            rate = (y * photons).float().cpu()
            y = (torch.poisson(rate, generator=gen) / photons).to(x)
        if read > 0:
            y = y + read * _randn(gen, *x.shape).to(x)
        return y


class JPEG(Degradation):
    """JPEG compression artefacts: a PIL round trip at ``quality`` (1-100, int per image)."""

    def __init__(self, quality: Range = (30, 90)) -> None:
        self.quality = _check_range("quality", quality, 1, 100)

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        quality = int(round(_uniform(self.quality, gen)))
        arr = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).cpu()
        if arr.shape[0] not in (1, 3):
            raise ValueError(f"jpeg needs 1 or 3 channels, got {arr.shape[0]}")
        hwc = arr.permute(1, 2, 0).numpy()
        image = Image.fromarray(hwc[..., 0] if arr.shape[0] == 1 else hwc)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        decoded = np.asarray(Image.open(buffer).convert("L" if arr.shape[0] == 1 else "RGB"))
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(x) / 255.0


class Chain(Degradation):
    """Several degradations in sequence (a list in a spec builds one)."""

    def __init__(self, steps: Sequence[Any]) -> None:
        self.steps = [build_degradation(s) for s in steps]

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for step in self.steps:
            x = step(x, gen)
        return x


def build_degradation(spec: Any) -> Callable[..., Any]:
    """A degradation from a spec (``{type: noise, sigma: 25}``, a name, a list, or a built one)."""
    if isinstance(spec, (list, tuple)):
        return Chain(spec)
    if isinstance(spec, (str, Mapping)):
        return build("degradation", spec)
    if callable(spec):
        return spec
    raise BuildError(f"a degradation spec must be a name, a mapping with 'type' or a list, got {spec!r}")
