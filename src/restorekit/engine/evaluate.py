"""Per-task evaluation: PSNR/SSIM of the input and of the restored image, per task.

The protocol variant is explicit and printed with every table: test images are
centre-cropped to a multiple of ``eval.crop_multiple`` (16 by default, as
PromptIR's ``crop_img``; 0 keeps the full image), the restored image is clamped
to [0, 1], and metrics run on RGB (or the BT.601 Y channel with ``eval.color: y``).
Under torchrun each rank scores every N-th image and the sums are all-reduced.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from restorekit.building import build
from restorekit.engine.config import EvalConfig
from restorekit.engine.ensemble import SelfEnsemble
from restorekit.engine.infer import non_finite_output, restore_tensor
from restorekit.errors import DataError, RecipeError, RestorekitError
from restorekit.io.atomic import atomic_path, write_text
from restorekit.io.image_files import is_image_file, write_image
from restorekit.metrics import on_luma, psnr

MetricFn = Callable[..., torch.Tensor]
REPORT_MD, REPORT_JSON = "eval.md", "eval.json"


class NonFiniteOutputError(RestorekitError, ValueError):
    """The model restored a test image to NaN or infinity; no score is given for it."""


def center_crop_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre crop (C, H, W) so H and W are multiples of ``multiple`` (0 or 1: unchanged)."""
    if multiple <= 1:
        return image
    h, w = image.shape[-2:]
    dh, dw = h % multiple, w % multiple
    if h - dh <= 0 or w - dw <= 0:
        return image
    return image[..., dh // 2 : h - dh + dh // 2, dw // 2 : w - dw + dw // 2]


def suite_data(data_cfg: Mapping[str, Any], cfg: EvalConfig, suite: str, source: str) -> dict[str, Any]:
    """The recipe's data section with ``data.val`` replaced by ``eval.suites[suite]``."""
    if suite not in cfg.suites:
        known = ", ".join(sorted(cfg.suites)) or "none"
        raise RecipeError(f"{source}: no evaluation suite {suite!r} in eval.suites (known: {known})")
    return {**data_cfg, "val": dict(cfg.suites[suite])}


def protocol(cfg: EvalConfig, *, ema: bool | None = None) -> dict[str, Any]:
    """The protocol variant, as data (it goes into the JSON) ..."""
    return {
        "crop": f"centre crop to a multiple of {cfg.crop_multiple}" if cfg.crop_multiple > 1 else "full image",
        "color": "Y (BT.601)" if cfg.color == "y" else "RGB",
        "crop_border": cfg.crop_border,
        "tile": cfg.tile,
        "overlap": cfg.overlap if cfg.tile else None,
        "weights": None if ema is None else ("EMA" if ema else "raw (no EMA)"),
        "self_ensemble": cfg.self_ensemble,
    }


def protocol_line(info: Mapping[str, Any]) -> str:
    """... and as the sentence printed above every table."""
    parts = [f"protocol: {info['crop']}", f"metrics on {info['color']}", f"crop border {info['crop_border']}"]
    parts.append(f"tiles {info['tile']} overlap {info['overlap']}" if info.get("tile") else "whole-image inference")
    if info.get("self_ensemble"):
        parts.append("x8 self-ensemble")
    if info.get("weights"):
        parts.append(f"weights {info['weights']}")
    if info.get("suite"):
        parts.append(f"suite {info['suite']}")
    return ", ".join(parts)


def build_metrics(cfg: EvalConfig) -> dict[str, MetricFn]:
    """Row name -> metric, built through the metric registry (plugin metrics too).

    With ``eval.color: y`` every metric runs on the BT.601 luma of both images.
    """
    out = {}
    for name, spec in cfg.named_metric_specs().items():
        metric = build("metric", spec)
        out[name] = on_luma(metric) if cfg.color == "y" else metric
    return out


def metric_directions(cfg: EvalConfig) -> dict[str, bool]:
    """Row name -> the metric's ``higher_is_better`` (the Metric contract, checked by build()), for the
    best rule and comparisons (``on_luma`` keeps the attribute)."""
    return {name: bool(metric.higher_is_better) for name, metric in build_metrics(cfg).items()}


def output_name(name: object, index: int) -> str:
    """Where a restored test image is saved, relative to ``DIR/<task>/`` and without suffix.

    The test image's name keeps its subfolders (``sub/img``), so images with the same
    stem in different folders do not overwrite each other; ``..`` and root parts are
    dropped so nothing lands outside the task folder.
    """
    path = PurePosixPath(str(name).replace("\\", "/"))
    if is_image_file(path):  # a name given with its file suffix: saved as .png all the same
        path = path.with_suffix("")
    kept = [p for p in path.parts if p not in ("", ".", "..", "/")]
    return "/".join(kept) or str(index)


def _unique(name: str, index: int, seen: set[str]) -> str:
    """``name``, or ``name-<index>`` when an earlier image took it (compared case-blind)."""
    while name.casefold() in seen:
        name = f"{name}-{index}"
    seen.add(name.casefold())
    return name


def unique_output_names(names: Sequence[object]) -> list[str]:
    """:func:`output_name` of each name, made unique in order (the same on every rank)."""
    seen: set[str] = set()
    return [_unique(output_name(name, i), i, seen) for i, name in enumerate(names)]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    eval_sets: Mapping[str, Any],
    cfg: EvalConfig,
    device: torch.device,
    *,
    amp: bool | str = False,
    rank: int = 0,
    world_size: int = 1,
    max_images: int | None = None,
    save_dir: Path | None = None,
    keep_for_grid: int = 0,
    allow_nonfinite: bool = False,
) -> dict[str, Any]:
    """Scores per task: ``{"tasks": {task: {"images", "psnr_in", "psnr", ...}}, "mean": {...}}``.

    ``keep_for_grid`` keeps that many (input, restored, target) triplets per task
    (on this rank) under ``result["grid"]`` for :func:`write_grid`. A restored image
    holding NaN or infinity is a :class:`NonFiniteOutputError` naming it, unless
    ``allow_nonfinite`` (validation during training, whose NaN guard watches the loss)
    lets it score NaN.
    """
    fns = build_metrics(cfg)
    was_training = model.training
    model.eval()
    # Test images come in many sizes: cuDNN autotuning (on for training) would tune each one.
    benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
    scorer: nn.Module = model
    if cfg.self_ensemble:
        scorer = SelfEnsemble(model)
    try:
        result = _score(
            scorer,
            eval_sets,
            cfg,
            device,
            fns,
            amp=amp,
            rank=rank,
            world_size=world_size,
            max_images=max_images,
            save_dir=save_dir,
            keep_for_grid=keep_for_grid,
            allow_nonfinite=allow_nonfinite,
        )
    finally:
        torch.backends.cudnn.benchmark = benchmark
        model.train(was_training)
    return result


def _score(
    model: nn.Module,
    eval_sets: Mapping[str, Any],
    cfg: EvalConfig,
    device: torch.device,
    fns: Mapping[str, Any],
    *,
    amp: bool | str,
    rank: int,
    world_size: int,
    max_images: int | None,
    save_dir: Path | None,
    keep_for_grid: int,
    allow_nonfinite: bool,
) -> dict[str, Any]:
    """The scoring loop of :func:`evaluate` (model already in eval mode)."""
    names = [f"{m}{suffix}" for m in fns for suffix in ("_in", "")]
    tasks: dict[str, dict[str, float]] = {}
    grid: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
    limit = max_images if max_images is not None else cfg.max_images
    for task, dataset in eval_sets.items():
        count = len(dataset) if limit is None else min(limit, len(dataset))
        sums = torch.zeros(len(names) + 1, dtype=torch.float64)
        # Saved names are planned from the whole set when it lists them, so every rank
        # agrees on them; otherwise clashes are resolved among the images seen here.
        listed = getattr(dataset, "names", None) if save_dir is not None else None
        listed_ok = isinstance(listed, Sequence) and not isinstance(listed, str) and len(listed) == len(dataset)
        planned = unique_output_names(listed) if listed_ok else None
        seen: set[str] = set()
        for index in range(rank, count, world_size):
            item = dataset[index]
            lq = center_crop_multiple(item["lq"], cfg.crop_multiple).unsqueeze(0).to(device)
            gt = center_crop_multiple(item["gt"], cfg.crop_multiple).unsqueeze(0).to(device)
            out = restore_tensor(model, lq, tile=cfg.tile, overlap=cfg.overlap, amp=amp)
            where = f"eval task {task!r}, image {item.get('name', index)!r} ({lq.shape[-2]}x{lq.shape[-1]})"
            problem = None if allow_nonfinite else non_finite_output(out)
            if problem:
                raise NonFiniteOutputError(f"{where}: {problem}")
            sums += torch.tensor(_image_scores(fns, lq, out, gt, cfg.crop_border, where) + [1.0], dtype=torch.float64)
            if save_dir is not None:
                if planned is not None:
                    rel = planned[index]
                else:
                    rel = _unique(output_name(item.get("name", index), index), index, seen)
                target = save_dir / task / f"{rel}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                write_image(target, out[0])
            if len(grid.get(task, [])) < keep_for_grid:
                grid.setdefault(task, []).append((lq[0].cpu(), out[0].cpu(), gt[0].cpu()))
        if world_size > 1:
            # On the device: an NCCL group reduces CUDA tensors only (gloo takes either).
            on_device = sums.to(device)
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
            sums = on_device.cpu()
        n = int(sums[-1])
        row: dict[str, float] = {"images": n}
        for i, name in enumerate(names):
            row[name] = float(sums[i] / max(n, 1))
        tasks[task] = row
    mean = {name: sum(r[name] for r in tasks.values()) / max(len(tasks), 1) for name in names}
    result: dict[str, Any] = {"tasks": tasks, "mean": mean}
    if grid:
        result["grid"] = grid
    return result


def _image_scores(
    fns: Mapping[str, Any], lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor, crop_border: int, where: str
) -> list[float]:
    """(input, restored) score of each metric for one image; a metric refusing the image names it."""
    values = []
    try:
        for fn in fns.values():
            values.append(float(fn(lq.float(), gt.float(), crop_border=crop_border)[0]))
            values.append(float(fn(out, gt.float(), crop_border=crop_border)[0]))
    except ValueError as exc:  # e.g. an image smaller than SSIM's window
        raise DataError(f"{where}: {exc}; remove the image, or leave that metric out of eval.metrics") from exc
    return values


def refuse_nan_scores(result: Mapping[str, Any], what: str) -> None:
    """NonFiniteOutputError when a restored score is NaN (the model's output held NaN)."""
    bad = [task for task, row in result["tasks"].items()
           if any(not name.endswith("_in") and value != value for name, value in row.items())]  # fmt: skip
    if bad:
        raise NonFiniteOutputError(
            f"{what}: the model's output holds NaN on task(s) {', '.join(bad)}; "
            "no scores are reported for broken weights"
        )


def markdown_table(result: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> str:
    """Per-task table: input vs restored for each metric, and the PSNR gain."""
    tasks = result["tasks"]
    first = next(iter(tasks.values()), {})
    metrics = [m for m in first if m != "images" and not m.endswith("_in") and f"{m}_in" in first]
    head = ["task", "images"]
    for m in metrics:
        head += [f"{m.upper()} input", f"{m.upper()} restored"]
    if "psnr" in metrics:
        head.append("PSNR gain")
    lines = []
    if info is not None:
        lines += [protocol_line(info), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]

    def cells(name: str, row: Mapping[str, float], images: str) -> str:
        out = [name, images]
        for m in metrics:
            fmt = "{:.2f}" if "psnr" in m else "{:.4f}"
            out += [fmt.format(row[f"{m}_in"]), fmt.format(row[m])]
        if "psnr" in metrics:
            out.append(f"{row['psnr'] - row['psnr_in']:+.2f}")
        return "| " + " | ".join(out) + " |"

    for task, row in tasks.items():
        lines.append(cells(task, row, str(int(row["images"]))))
    if len(tasks) > 1:
        lines.append(cells("**mean**", result["mean"], ""))
    return "\n".join(lines)


def report_json(result: Mapping[str, Any], info: Mapping[str, Any], **extra: Any) -> str:
    body = {"protocol": dict(info), "tasks": result["tasks"], "mean": result["mean"], **extra}
    return json.dumps(body, indent=2, default=str)


def write_report(
    folder: Path, result: Mapping[str, Any], info: Mapping[str, Any], appendix: str = "", **extra: Any
) -> None:
    """``eval.md`` (the table, then ``appendix``) and ``eval.json`` in ``folder`` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / REPORT_MD, markdown_table(result, info) + (f"\n\n{appendix}" if appendix else "") + "\n")
    write_text(folder / REPORT_JSON, report_json(result, info, **extra) + "\n")


def write_grid(path: Path, result: Mapping[str, Any], note: str = "") -> Path:
    """A before/after PNG: one row per kept image, columns input | restored | target."""
    # why: matplotlib is a heavy import and only this figure needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [(task, triplet) for task, items in result.get("grid", {}).items() for triplet in items]
    if not rows:
        raise ValueError("no images were kept for a grid (keep_for_grid=0)")
    aspect = max(t[0].shape[-2] / t[0].shape[-1] for _, t in rows)
    fig = Figure(figsize=(9, 3 * aspect * len(rows) + 0.4 * (len(rows) + 1)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for r, (task, (lq, out, gt)) in enumerate(rows):
        panels = [
            (lq, f"{task}: input  {float(psnr(lq[None], gt[None])[0]):.2f} dB"),
            (out, f"restored  {float(psnr(out[None], gt[None])[0]):.2f} dB"),
            (gt, "target"),
        ]
        for c, (img, title) in enumerate(panels):
            ax = fig.add_subplot(len(rows), 3, r * 3 + c + 1)
            ax.imshow(img.clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=10)
            ax.axis("off")
    if note:
        fig.suptitle(note, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
