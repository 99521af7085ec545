"""Published numbers beside measured ones: a recipe's ``published:`` section.

A protocol recipe may carry the per-task scores papers report on its protocol::

    published:
      PromptIR:
        citation: "Potlapalli et al., PromptIR, NeurIPS 2023 (arXiv 2306.13090), Table 1"
        tasks:
          denoise_15: {psnr: 33.98, ssim: 0.933}
          derain: {psnr: 36.37, ssim: 0.972}

Task names are the recipe's ``data.val`` names and metric names its
``eval.metrics`` names; ``eval`` prints each method's numbers beside the measured
ones with the difference, signed by the metric's direction (its ``higher_is_better``):
positive when the measurement is better than the published number (for PSNR and SSIM:
measured minus published; for an error such as MAE: published minus measured).
Light: no torch here; the caller gives each metric's direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from restorekit.errors import Problems

ENTRY_KEYS = ("citation", "tasks")


def check_published(section: Any, source: str, problems: Problems | None = None) -> None:
    """Report (by default: raise a RecipeError for) each entry of ``published:`` not of the documented shape."""
    problems = Problems() if problems is None else problems
    if section is None:
        return
    if not isinstance(section, Mapping):
        problems.report(f"{source}: key 'published' must map a method name to its numbers", "published")
        return
    for method, entry in section.items():
        key = f"published.{method}"
        where = f"{source}: {key}"
        if not isinstance(entry, Mapping):
            problems.report(f"{where} must be a mapping with {' and '.join(ENTRY_KEYS)}", key)
            continue
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            problems.report(f"{where}: unknown key(s) {unknown} (known: {', '.join(ENTRY_KEYS)})", key)
        if not isinstance(entry.get("citation"), str) or not entry["citation"].strip():
            problems.report(
                f"{where}.citation must name the paper (and table) the numbers come from", f"{key}.citation"
            )
        tasks = entry.get("tasks")
        if not isinstance(tasks, Mapping) or not tasks:
            problems.report(f"{where}.tasks must map task names to {{metric: value}}", f"{key}.tasks")
            continue
        for task, scores in tasks.items():
            if not isinstance(scores, Mapping) or not scores:
                problems.report(f"{where}.tasks.{task} must map metric names to numbers", f"{key}.tasks.{task}")
                continue
            for metric, value in scores.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    problems.report(
                        f"{where}.tasks.{task}.{metric} must be a number, got {value!r}", f"{key}.tasks.{task}.{metric}"
                    )


def gain(measured: float, published: float, higher_is_better: bool) -> float:
    """How much better the measurement is than the published number (negative: worse)."""
    return measured - published if higher_is_better else published - measured


def published_tables(
    result: Mapping[str, Any], published: Mapping[str, Any] | None, directions: Mapping[str, bool]
) -> str:
    """One markdown table per published method: measured, published and the difference per task.

    ``directions``: each measured metric's ``higher_is_better``. Only tasks and metrics
    both sides have, of a known direction, are shown; a method sharing none is skipped.
    """
    blocks = []
    for method, entry in (published or {}).items():
        table = _method_table(result, method, entry, directions)
        if table:
            blocks.append(table)
    return "\n\n".join(blocks)


def _method_table(
    result: Mapping[str, Any], method: str, entry: Mapping[str, Any], directions: Mapping[str, bool]
) -> str:
    tasks = result.get("tasks", {})
    shared = [t for t in entry["tasks"] if t in tasks]
    metrics = [m for m in _metric_order(entry) if m in directions and any(m in tasks[t] and m in entry["tasks"][t]
                                                                          for t in shared)]  # fmt: skip
    if not shared or not metrics:
        return ""
    head = ["task"] + [f"{m.upper()} {label}" for m in metrics for label in ("measured", method, "difference")]
    lines = [f"published: {method} ({entry['citation']})", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]  # fmt: skip
    for task in shared:
        cells = [task]
        for metric in metrics:
            cells += _cells(tasks[task].get(metric), entry["tasks"][task].get(metric), metric, directions[metric])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metric_order(entry: Mapping[str, Any]) -> list[str]:
    seen: list[str] = []
    for scores in entry["tasks"].values():
        seen += [m for m in scores if m not in seen]
    return seen


def _cells(measured: float | None, paper: float | None, metric: str, higher_is_better: bool) -> list[str]:
    fmt = "{:.2f}" if "psnr" in metric else "{:.4f}"  # decibels to 2 places, ratios to 4
    show = [fmt.format(v) if v is not None else "-" for v in (measured, paper)]
    diff = (
        "-"
        if measured is None or paper is None
        else ("{:+.2f}" if "psnr" in metric else "{:+.4f}").format(gain(measured, paper, higher_is_better))
    )
    return show + [diff]


def published_differences(
    result: Mapping[str, Any], published: Mapping[str, Any] | None, directions: Mapping[str, bool]
) -> dict[str, Any]:
    """``{method: {task: {metric: {"published", "measured", "difference"}}}}`` for eval.json.

    ``difference`` is signed by the metric's direction: positive when the measurement is better.
    """
    out: dict[str, Any] = {}
    tasks = result.get("tasks", {})
    for method, entry in (published or {}).items():
        rows = {}
        for task, scores in entry["tasks"].items():
            if task not in tasks:
                continue
            rows[task] = {m: {"published": v, "measured": tasks[task][m],
                              "difference": gain(tasks[task][m], v, directions[m])}
                          for m, v in scores.items() if m in tasks[task] and m in directions}  # fmt: skip
        if rows:
            out[method] = {"citation": entry["citation"], "tasks": rows}
    return out
