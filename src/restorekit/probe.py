"""The feature robustness probe: how much do a network's features move under degradation?

DINO-IR's motivating experiment. For each clean image and each degradation, the
clean and the degraded image go through the same feature extractor (a backbone's
blocks, or a restoration body's encoder levels); per layer, the cosine
similarity of the two feature vectors at every token position is averaged over
the positions, then over the images. 1 means the degradation did not move the
features at all. The result prints as a table (layers x degradations) and is
written as CSV and a PNG plot (``restorekit probe``,
``benchmarks/robustness_probe.py``).

``metric='l1'`` measures instead DPC's distance, per layer: the mean absolute
difference of the clean and degraded features over the mean absolute clean feature
(0: the layer cannot tell them apart). Run over every block
(``restorekit probe --metric l1 --layers all``), it shows which layers discriminate
clean from degraded images, the reason DPC reads early layers.

The same measurement compares guide pass rules (:func:`compare_rules`): per layer,
how close the windowed or budgeted guide of a clean photograph at its own size is to
the global pass's (``restorekit probe --compare-rules windowed,budget``).
"""

from __future__ import annotations

import csv
import io
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from restorekit.backbones.guide import DEFAULT_OVERLAP, DEFAULT_WINDOW, PASS_RULES, GuidePass
from restorekit.building import build
from restorekit.contracts import is_pretrained
from restorekit.data.degradations import build_degradation
from restorekit.data.samples import load_sample
from restorekit.data.seeding import derive_seed
from restorekit.errors import BuildError
from restorekit.io.atomic import write_bytes, write_text
from restorekit.io.image_files import read_image
from restorekit.io.padding import PAD_MULTIPLE
from restorekit.recipes import parse_yaml

DEFAULT_DEGRADATIONS: tuple[Any, ...] = (
    {"type": "noise", "sigma": 15},
    {"type": "noise", "sigma": 25},
    {"type": "noise", "sigma": 50},
    "rain",
    "haze",
    "motion_blur",
    "low_light",
)
DEFAULT_IMAGES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket")
ALL_LAYERS = "all"  # --layers all: every block of the backbone
Features = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


# -- inputs --------------------------------------------------------------------------
def load_probe_image(name_or_path: str, size: int | None = 224) -> torch.Tensor:
    """(3, size, size) in [0, 1]: a sample photograph by name (``restorekit.data.samples``), or an image file.

    The shorter side is resized to ``size`` (antialiased) and the centre cropped
    square; ``size=None`` keeps the native resolution.
    """
    if os.path.isfile(name_or_path):
        img = read_image(name_or_path)
    else:  # a scikit-image photograph; an unknown name is a DataError listing the known ones
        img = load_sample(name_or_path)
    return square_crop(img, size) if size else img


def square_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size``, then crop the centre ``size`` x ``size``."""
    h, w = img.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[:, top : top + size, left : left + size].clamp(0, 1).contiguous()


def degradation_label(spec: Any) -> str:
    """A short column name for a degradation spec (``noise sigma=25``)."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        params = " ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
        return f"{spec.get('type', '?')} {params}".strip()
    if isinstance(spec, (list, tuple)):
        return "+".join(degradation_label(s) for s in spec)
    return type(spec).__name__


def build_degradations(specs: Sequence[Any] | None = None) -> list[tuple[str, Callable[..., torch.Tensor]]]:
    """(label, degradation) pairs from the degradation registry."""
    specs = DEFAULT_DEGRADATIONS if specs is None else specs
    if not specs:
        raise BuildError("the probe needs at least one degradation")
    return [(degradation_label(s), build_degradation(s)) for s in specs]


# -- extractors ----------------------------------------------------------------------
def default_layers(num_layers: int) -> list[int]:
    """About five blocks from first to last (``0,3,6,9,11`` for 12 blocks)."""
    step = max(1, num_layers // 4)
    layers = list(range(0, num_layers, step))
    if layers[-1] != num_layers - 1:
        layers.append(num_layers - 1)
    return layers


def backbone_features(
    backbone: Any, layers: Sequence[int] | str | None = None, grid: tuple[int, int] | None = None
) -> tuple[Features, list[str]]:
    """A features function over a backbone's blocks (``layers='all'``: every block), and the layer labels."""
    if layers == ALL_LAYERS:
        chosen = list(range(backbone.num_layers))
    else:
        chosen = list(layers) if layers else default_layers(backbone.num_layers)
    backbone.resolve_layers(chosen)  # clear error for a block that does not exist

    def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = backbone(x, chosen, grid=grid)
        return {str(layer): maps[layer] for layer in chosen}

    return features, [str(layer) for layer in chosen]


def body_features(body: Any, levels: Sequence[str] | None = None) -> tuple[Features, list[str]]:
    """A features function over a restoration body's encoder levels (``encode``)."""
    if not hasattr(body, "encode"):
        raise BuildError(f"body {type(body).__name__} has no encode(x); the probe needs one")
    wanted = list(levels) if levels else None

    def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = body.encode(x)
        names = wanted or list(maps)
        missing = [n for n in names if n not in maps]
        if missing:
            raise BuildError(f"body encoder has no level(s) {missing}; it has {list(maps)}")
        return {n: maps[n] for n in names}

    with torch.no_grad():
        labels = wanted or list(features(torch.zeros(1, 3, 32, 32, device=_device_of(body))))
    return features, labels


def _device_of(module: Any) -> torch.device:
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


# -- the measurement -------------------------------------------------------------------
def token_cosine(clean: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
    """Mean over positions of the cosine similarity of the channel vectors: (B,).

    Equal vectors count as 1 even when they are zero (a bias-free encoder maps
    black regions to zero features), where the plain formula would give 0.
    """
    clean, degraded = clean.float(), degraded.float()
    cos = F.cosine_similarity(clean, degraded, dim=1, eps=1e-8)
    cos = torch.where((clean == degraded).all(dim=1), torch.ones_like(cos), cos)
    return cos.flatten(1).mean(1)


def relative_l1(clean: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
    """DPC's distance, scale-free: mean |clean - degraded| / mean |clean| per sample, (B,)."""
    clean, degraded = clean.float(), degraded.float()
    return (clean - degraded).abs().flatten(1).mean(1) / clean.abs().flatten(1).mean(1).clamp_min(1e-12)


# metric name -> (function of (clean, degraded) maps -> (B,), what the numbers are)
PROBE_METRICS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str]] = {
    "cosine": (token_cosine, "mean cosine similarity"),
    "l1": (relative_l1, "relative L1 distance (DPC's)"),
}


@dataclass
class ProbeResult:
    """Similarities ``values[image, degradation, layer]`` of one extractor.

    ``measure`` says what is compared (titles) and ``condition`` what the middle axis
    holds (the CSV column): degradations, or guide pass rules in :func:`compare_rules`.
    """

    extractor: str
    images: list[str]
    degradations: list[str]
    layers: list[str]
    values: np.ndarray
    notes: list[str] = field(default_factory=list)
    measure: str = "clean vs degraded"
    condition: str = "degradation"
    metric: str = "cosine"  # a PROBE_METRICS name: also the CSV column of the values

    def mean(self) -> np.ndarray:
        """(layers, degradations): the mean over images."""
        return self.values.mean(axis=0).T

    def table(self) -> str:
        """Layers down, degradations across, mean cosine similarity in the cells."""
        mean = self.mean()
        width = max(8, *(len(d) for d in self.degradations))
        head = f"{'layer':>8s} " + " ".join(f"{d:>{width}s}" for d in self.degradations)
        rows = [f"{layer:>8s} " + " ".join(f"{v:>{width}.4f}" for v in mean[i]) for i, layer in enumerate(self.layers)]
        return "\n".join([f"{self.extractor}: {PROBE_METRICS[self.metric][1]}, {self.measure}", head, *rows])

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per image, degradation and layer, then the means (image ``mean``)."""
        rows = []
        for i, image in enumerate(self.images):
            for j, deg in enumerate(self.degradations):
                for k, layer in enumerate(self.layers):
                    rows.append(
                        {
                            "extractor": self.extractor,
                            "image": image,
                            self.condition: deg,
                            "layer": layer,
                            self.metric: float(self.values[i, j, k]),
                        }
                    )
        mean = self.mean()
        for k, layer in enumerate(self.layers):
            for j, deg in enumerate(self.degradations):
                rows.append(
                    {
                        "extractor": self.extractor,
                        "image": "mean",
                        self.condition: deg,
                        "layer": layer,
                        self.metric: float(mean[k, j]),
                    }
                )
        return rows


@torch.no_grad()
def run_probe(
    features: Features,
    layers: Sequence[str],
    images: Sequence[tuple[str, torch.Tensor]],
    degradations: Sequence[tuple[str, Callable[..., torch.Tensor]]],
    *,
    extractor: str = "features",
    seed: int = 0,
    device: str | torch.device = "cpu",
    metric: str = "cosine",
) -> ProbeResult:
    """Measure clean-vs-degraded similarity (or ``metric='l1'`` distance) per image, degradation and layer.

    Each image and its degraded versions go through ``features`` as one batch;
    degradation ``j`` of image ``i`` uses the seed ``(seed, i, j)``, so a run is
    reproducible.
    """
    if not images:
        raise BuildError("the probe needs at least one image")
    if metric not in PROBE_METRICS:
        raise BuildError(f"probe metric must be one of {', '.join(PROBE_METRICS)}, got {metric!r}")
    measure = PROBE_METRICS[metric][0]
    values = np.zeros((len(images), len(degradations), len(layers)), dtype=np.float64)
    for i, (_, img) in enumerate(images):
        degraded = [deg(img, rng=derive_seed(seed, i, j)) for j, (_, deg) in enumerate(degradations)]
        batch = torch.stack([img, *degraded]).to(device)
        maps = features(batch)
        for k, layer in enumerate(layers):
            fmap = maps[layer]
            values[i, :, k] = measure(fmap[:1].expand_as(fmap[1:]), fmap[1:]).cpu().numpy()
    return ProbeResult(
        extractor=extractor,
        images=[name for name, _ in images],
        degradations=[label for label, _ in degradations],
        layers=list(layers),
        values=values,
        metric=metric,
    )


# -- outputs -------------------------------------------------------------------------
def csv_text(results: Sequence[ProbeResult]) -> str:
    """One CSV: extractor, image, the condition (degradation or rule), layer, the metric (cosine or l1)."""
    buffer = io.StringIO()
    condition = results[0].condition if results else "degradation"
    metric = results[0].metric if results else "cosine"
    writer = csv.DictWriter(buffer, fieldnames=("extractor", "image", condition, "layer", metric), lineterminator="\n")
    writer.writeheader()
    for result in results:
        for row in result.csv_rows():
            writer.writerow({**row, metric: f"{row[metric]:.6f}"})
    return buffer.getvalue()


def plot_png(results: Sequence[ProbeResult], title: str | None = None) -> bytes:
    """PNG bytes: one panel per extractor, one line per degradation over the layers.

    Uses matplotlib's Agg canvas directly, so no global backend is switched.
    """
    # why: matplotlib is a heavy import and only this figure needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(results)
    fig = Figure(figsize=(4.2 * n + 1.8, 3.8), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for ax, result in zip(axes, results):
        mean = result.mean()
        x = np.arange(len(result.layers))
        for j, deg in enumerate(result.degradations):
            ax.plot(x, mean[:, j], marker="o", ms=3, label=deg)
        ax.set_xticks(x, result.layers, rotation=45 if len(result.layers) > 8 else 0)
        ax.set_xlabel("layer")
        ax.set_title(textwrap.fill(result.extractor, 48), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{PROBE_METRICS[results[0].metric][1]} ({results[0].measure})", fontsize=8)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside right center", title=results[0].condition, title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_outputs(
    results: Sequence[ProbeResult], out_dir: str | os.PathLike, stem: str = "probe", title: str | None = None
) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.png`` atomically into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / f"{stem}.csv", out / f"{stem}.png"
    write_text(csv_path, csv_text(results))
    write_bytes(png_path, plot_png(results, title))
    return csv_path, png_path


# -- specs (CLI and benchmark) -----------------------------------------------------------
def parse_spec(text: str, option: str) -> Any:
    """A part spec from the command line: a name or a YAML/JSON mapping."""
    spec = parse_yaml(text, source=option)
    if isinstance(spec, str) or (isinstance(spec, Mapping) and "type" in spec):
        return spec
    raise BuildError(f"{option} must be a name or a mapping with 'type', got {text!r}")


def parse_degradations(text: str | None) -> list[Any] | None:
    """``noise,rain`` or a YAML list (``[{type: noise, sigma: 25}, haze]``)."""
    if text is None:
        return None

    value = parse_yaml(text, source="--degradations")
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return value
    raise BuildError(f"--degradations must be names or a YAML list of specs, got {text!r}")


def parse_layers(text: str | None) -> list[int] | str | None:
    """``--layers``: comma-separated blocks, or ``all``."""
    if text is not None and text.strip() == ALL_LAYERS:
        return ALL_LAYERS
    return parse_int_list(text, "--layers")


def parse_int_list(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise BuildError(f"{option} must be comma-separated integers, got {text!r}") from None


def spec_label(spec: Any) -> str:
    """``dinov2`` or ``dinov2(size=s)`` for plot titles and CSV rows."""
    if isinstance(spec, str):
        return spec
    params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
    return f"{spec['type']}({params})" if params else str(spec["type"])


def extractor_from_spec(
    kind: str,
    spec: Any,
    *,
    layers: Sequence[int] | str | None = None,
    levels: Sequence[str] | None = None,
    grid: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Features, list[str], list[str]]:
    """Build a backbone or body from its spec: (features, layer labels, notes)."""
    part = build(kind, spec)
    part = part.to(device).eval()
    notes = []
    if kind == "backbone":
        if not is_pretrained(part):
            notes.append(
                "randomly initialised backbone (no weights given): the numbers say nothing about the pretrained model"
            )
        features, labels = backbone_features(part, layers, grid)
    else:
        if not (isinstance(spec, Mapping) and spec.get("weights")):
            notes.append("randomly initialised body (no weights in its spec): its encoder is untrained")
        features, labels = body_features(part, levels)
    return features, labels, notes


def probe_spec(
    kind: str,
    spec: Any,
    images: Sequence[tuple[str, torch.Tensor]],
    degradations: Sequence[tuple[str, Callable[..., torch.Tensor]]],
    *,
    layers: Sequence[int] | str | None = None,
    levels: Sequence[str] | None = None,
    grid: tuple[int, int] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    metric: str = "cosine",
) -> ProbeResult:
    """Build the extractor a spec names and run the probe with it."""
    features, labels, notes = extractor_from_spec(kind, spec, layers=layers, levels=levels, grid=grid, device=device)
    result = run_probe(features, labels, images, degradations, extractor=spec_label(spec), seed=seed, device=device,
                       metric=metric)  # fmt: skip
    result.notes.extend(notes)
    return result


# -- guide pass rules ----------------------------------------------------------------------
@torch.no_grad()
def compare_rules(
    backbone: Any,
    images: Sequence[tuple[str, torch.Tensor]],
    rules: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    stride: int = 8,
    window: int | None = None,
    overlap: int | None = None,
    extractor: str = "backbone",
    device: str | torch.device = "cpu",
) -> ProbeResult:
    """Per layer, the cosine similarity of each rule's guide to the global pass's.

    Each image goes through the backbone as DINO-IR's guide pass would see it
    (padded as the body pads it, on the stride grid), once globally and once per
    rule; 1 means the rule changes nothing. Images are taken at the size given (the
    rules differ only where the grid exceeds one window).
    """
    unknown = [r for r in rules if r not in PASS_RULES or r == "global"]
    if unknown or not rules:
        raise BuildError(f"rules to compare must be among windowed, budget; got {list(rules)}")
    if not images:
        raise BuildError("the probe needs at least one image")
    chosen = list(layers) if layers else default_layers(backbone.num_layers)
    backbone.resolve_layers(chosen)
    reference = GuidePass(
        stride=stride,
        rule="global",
        window=window or DEFAULT_WINDOW,
        overlap=DEFAULT_OVERLAP if overlap is None else overlap,
        pad_multiple=PAD_MULTIPLE,
    )
    values = np.zeros((len(images), len(rules), len(chosen)), dtype=np.float64)
    for i, (_, img) in enumerate(images):
        x = img[None].to(device)
        whole = reference(backbone, x, chosen)
        for j, rule in enumerate(rules):
            maps = replace(reference, rule=rule)(backbone, x, chosen)
            for k, layer in enumerate(chosen):
                values[i, j, k] = float(token_cosine(whole[layer], maps[layer])[0])
    label = f"{extractor}: stride {stride}, window {reference.window}, overlap {reference.overlap}"
    return ProbeResult(
        extractor=label,
        images=[name for name, _ in images],
        degradations=list(rules),
        layers=[str(layer) for layer in chosen],
        values=values,
        measure="rule vs global pass",
        condition="rule",
    )
