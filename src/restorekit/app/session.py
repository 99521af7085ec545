"""What the app does, without the page: load models once, restore uploads, score against a target.

Every file is written by :meth:`restorekit.engine.restoring.Restorer.restore`, the
function ``restorekit restore`` calls, with the same :class:`RestoreOptions`: the
file a user downloads is byte for byte the command's output for the same weights and
options. Scores use the project's metrics (:mod:`restorekit.metrics`) on the file as
written, so they are what the download measures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from restorekit.engine.infer import ImageRestoreError, plan_outputs
from restorekit.engine.restoring import RestoreOptions, Restorer, load_restorer
from restorekit.io.image_files import LoadedImage, load_image
from restorekit.metrics import psnr, ssim

Progress = Callable[[float, str], None]  # (fraction done of the whole request, what is running)


@dataclass
class AppModel:
    """One model the page offers: its label, the options it was loaded with, the loaded model."""

    label: str
    options: RestoreOptions
    restorer: Restorer


@dataclass(frozen=True)
class Restored:
    """One restored upload: which input, which model, the file written, and its scores when a target was given."""

    source: Path
    model: str
    output: Path
    scores: Mapping[str, float] | None = None


def model_label(options: RestoreOptions) -> str:
    """What the page calls a model: the ``--weights`` given, or the recipe whose own weights load."""
    if options.weights is not None:
        return str(options.weights)
    return f"{options.recipe} (its own weights)"


def load_models(choices: Sequence[RestoreOptions]) -> list[AppModel]:
    """Load every model up front, so a bad ``--weights`` fails at start-up with the command's message."""
    models, seen = [], set()
    for options in choices:
        label = model_label(options)
        if label in seen:
            continue
        seen.add(label)
        models.append(AppModel(label, options, load_restorer(options)))
    return models


def slug(label: str) -> str:
    """A file-name-safe form of a model's label (``runs/a-1/`` -> ``runs-a-1``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "model"


class Session:
    """The loaded models and a folder the restored files go to (one sub-folder per request)."""

    def __init__(self, models: Sequence[AppModel], workdir: Path) -> None:
        if not models:
            raise ImageRestoreError("no model to restore with: pass --weights W (or --recipe R with its own weights)")
        self.models = {m.label: m for m in models}
        self.workdir = Path(workdir)
        self.requests = 0

    def restore(
        self,
        images: Sequence[str | Path],
        labels: Sequence[str],
        options: Mapping[str, object],
        *,
        target: str | Path | None = None,
        on_progress: Progress | None = None,
    ) -> list[Restored]:
        """Restore every image with every chosen model; ``options``: tile, overlap, max_memory, self_ensemble.

        Every input (and the target) is read before anything is restored, so a file
        that cannot be decoded is refused with its name and nothing is written.
        """
        if not images:
            raise ImageRestoreError("drop one or more images to restore first")
        unknown = [label for label in labels if label not in self.models]
        if not labels or unknown:
            raise ImageRestoreError(f"choose a model among: {', '.join(self.models)}")
        asked = {label: self.models[label].options.with_(**options) for label in labels}  # refused before any work
        self.requests += 1
        folder = self.workdir / f"request-{self.requests:04d}"
        jobs: list[tuple[Path, AppModel, Path]] = []
        for index, image in enumerate(map(Path, images)):
            out_dir = folder / f"{index:03d}"  # one folder per upload: two uploads may share a name
            out_dir.mkdir(parents=True, exist_ok=True)
            for label in labels:
                model = self.models[label]
                name = f"{image.stem}_{slug(label)}{image.suffix}" if len(labels) > 1 else image.name
                jobs += [(src, model, out) for src, out in plan_outputs(image, out_dir / name)]
        target_image = _read_target(Path(target)) if target else None
        results = []
        for done, (src, model, out) in enumerate(jobs):

            def tick(
                _: Path, tiles_done: int, tiles: int, done: int = done, src: Path = src, model: AppModel = model
            ) -> None:
                if on_progress is not None:
                    on_progress((done + tiles_done / max(tiles, 1)) / len(jobs), f"{src.name} with {model.label}")

            model.restorer.restore([(src, out)], asked[model.label], overwrite=False, on_progress=tick)
            scores = score_file(out, src, target_image, Path(target)) if target_image is not None else None
            results.append(Restored(src, model.label, out, scores))
        return results


def _read_target(path: Path) -> LoadedImage:
    try:
        return load_image(path)
    except (OSError, ValueError) as exc:
        raise ImageRestoreError(f"TARGET {path.name}: cannot read it ({exc})") from exc


def score_file(output: Path, source: Path, target: LoadedImage, target_path: Path) -> dict[str, float]:
    """PSNR and SSIM of the restored file and of the input against the clean target (RGB, no crop)."""
    restored, given, clean = load_image(output).rgb[None], load_image(source).rgb[None], target.rgb[None]
    if restored.shape != clean.shape:
        raise ImageRestoreError(
            f"TARGET {target_path.name} is {clean.shape[-1]}x{clean.shape[-2]} pixels but {source.name} is "
            f"{restored.shape[-1]}x{restored.shape[-2]}: give the clean version of the same image"
        )
    return {
        "psnr_in": float(psnr(given, clean)[0]),
        "psnr": float(psnr(restored, clean)[0]),
        "ssim_in": float(ssim(given, clean)[0]),
        "ssim": float(ssim(restored, clean)[0]),
    }


def scores_table(results: Sequence[Restored]) -> str:
    """Markdown: PSNR/SSIM of the input and of the restored file per image (and model, when several ran)."""
    rows = [r for r in results if r.scores]
    if not rows:
        return ""
    by_model = len({r.model for r in rows}) > 1
    head = ["image"] + (["model"] if by_model else []) + ["PSNR in", "PSNR out", "SSIM in", "SSIM out"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * (1 + by_model) + ["---:"] * 4) + "|"]
    for r in rows:
        s = r.scores or {}
        cells = [r.source.name] + ([r.model] if by_model else [])
        cells += [f"{s['psnr_in']:.2f}", f"{s['psnr']:.2f}", f"{s['ssim_in']:.4f}", f"{s['ssim']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
