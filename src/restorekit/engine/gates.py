"""MSF's gate weights per task over an evaluation set (the summary's question 2).

MSF weighs its K expert networks by a gate computed from the pooled backbone
layers of each input (``aux.gate``, one row of K weights summing to 1 per image).
If the experts specialise, images of one degradation share a gate pattern that
differs from another's; a gate that is the same for every task says the experts
are used alike. ``restorekit gates RECIPE --weights RUN`` scores the recipe's test
images (or an ``eval.suites`` suite) and writes ``gates.csv`` (one row per image),
``gates.md`` (the mean weight per task and expert) and ``gates.png`` (bars).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from restorekit.engine.config import EvalConfig
from restorekit.engine.evaluate import center_crop_multiple
from restorekit.errors import BuildError
from restorekit.io.atomic import write_bytes, write_text

GATES_CSV, GATES_MD, GATES_PNG = "gates.csv", "gates.md", "gates.png"


@torch.no_grad()
def gate_weights(
    model: nn.Module,
    sets: Mapping[str, Any],
    cfg: EvalConfig,
    device: torch.device | str = "cpu",
    max_images: int | None = None,
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Task -> [(image name, gate weights (K,))] for each test image, cropped as evaluation crops it."""
    model.eval()
    result: dict[str, list[tuple[str, np.ndarray]]] = {}
    for task, dataset in sets.items():
        rows = []
        count = len(dataset) if max_images is None else min(len(dataset), max_images)
        for index in range(count):
            item = dataset[index]
            lq = center_crop_multiple(item["lq"], cfg.crop_multiple)[None].to(device)
            _, aux = model(lq, return_aux=True)
            if getattr(aux, "gate", None) is None:
                raise BuildError(
                    f"{type(model).__name__}: its fusion has no gate (MSF's gate weights need model.fusion.type: msf)"
                )
            rows.append((str(item.get("name", index)), aux.gate[0].float().cpu().numpy()))
        result[task] = rows
    return result


def mean_gates(weights: Mapping[str, list[tuple[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Task -> the mean gate (K,) over its images."""
    return {task: np.mean([g for _, g in rows], axis=0) for task, rows in weights.items() if rows}


def gates_csv(weights: Mapping[str, list[tuple[str, np.ndarray]]]) -> str:
    buffer = io.StringIO()
    k = next(len(g) for rows in weights.values() for _, g in rows)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "image", *(f"expert_{i}" for i in range(k))])
    for task, rows in weights.items():
        for name, gate in rows:
            writer.writerow([task, name, *(f"{v:.6f}" for v in gate)])
    return buffer.getvalue()


def gates_markdown(weights: Mapping[str, list[tuple[str, np.ndarray]]], note: str = "") -> str:
    """Mean gate weight per task (rows) and expert (columns), with the image count."""
    means = mean_gates(weights)
    k = len(next(iter(means.values())))
    lines = ["# MSF gate weights per task", ""]
    if note:
        lines += [note, ""]
    lines += ["| task | images | " + " | ".join(f"expert {i}" for i in range(k)) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in range(k)) + " |"]  # fmt: skip
    for task, mean in means.items():
        lines.append(f"| {task} | {len(weights[task])} | " + " | ".join(f"{v:.3f}" for v in mean) + " |")
    return "\n".join(lines) + "\n"


def gates_png(weights: Mapping[str, list[tuple[str, np.ndarray]]], title: str = "") -> bytes:
    """Grouped bars: one group per task, one bar per expert (its mean weight)."""
    # why: matplotlib is a heavy import and only this figure needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    means = mean_gates(weights)
    tasks = list(means)
    k = len(means[tasks[0]])
    fig = Figure(figsize=(1.2 * len(tasks) + 2.5, 3.4), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / k
    x = np.arange(len(tasks))
    for i in range(k):
        ax.bar(x + (i - (k - 1) / 2) * width, [means[t][i] for t in tasks], width, label=f"expert {i}")
    ax.set_xticks(x, tasks, rotation=30 if len(tasks) > 4 else 0, fontsize=8)
    ax.set_ylabel("mean gate weight")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_gate_report(
    folder: Path, weights: Mapping[str, list[tuple[str, np.ndarray]]], note: str = ""
) -> tuple[Path, Path, Path]:
    """``gates.csv``, ``gates.md`` and ``gates.png`` in ``folder``, each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / GATES_CSV, folder / GATES_MD, folder / GATES_PNG
    write_text(paths[0], gates_csv(weights))
    write_text(paths[1], gates_markdown(weights, note))
    write_bytes(paths[2], gates_png(weights, note))
    return paths
