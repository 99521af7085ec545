"""A comparison of runs as one self-contained HTML page and its markdown twin.

Both come from the same sections (:func:`build_sections`): the runs, what each
recipe changes against the first (``restorekit diff``'s :func:`recipe_diff`), one
table per metric with every run's final evaluation side by side and the published
numbers the recipes carry (:mod:`restorekit.published`), the training curves
(loss, per-task validation PSNR; inline SVG in the page, last and best values in the
markdown) and the same crop of each run's restored test images (or each run's
before/after grid). Images are ``data:`` URIs: the page needs nothing but itself.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image

from restorekit.engine.config import eval_config
from restorekit.engine.evaluate import metric_directions
from restorekit.errors import RestorekitError
from restorekit.io.atomic import AppearedMeanwhile, atomic_path
from restorekit.io.outputs import OutputExistsError
from restorekit.recipes import is_missing, recipe_diff
from restorekit.report.runs import RunSummary
from restorekit.report.svg import line_chart

GRID_WIDTH = 720  # px: grids are shown no wider


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]
    css: str = ""
    higher_is_better: bool = True  # of a scores table: which value the page marks best


@dataclass
class Section:
    title: str
    anchor: str
    text: str = ""
    tables: list[tuple[str, Table]] = field(default_factory=list)  # (caption, table)
    charts: list[tuple[str, str, Table]] = field(default_factory=list)  # (caption, svg, summary table)
    images: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)  # (caption, [(run, data URI)])


def _fmt(metric: str, value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.2f}" if "psnr" in metric else f"{value:.4f}"


def _show(value: Any) -> str:
    return "(absent)" if is_missing(value) else repr(value)


def runs_section(runs: Sequence[RunSummary]) -> Section:
    rows = []
    for run in runs:
        steps = [int(r["step"]) for r in run.records if isinstance(r.get("step"), int)]
        loss = run.loss_curve()
        rows.append([run.name, str(run.recipe.get("name", "-")), str(run.folder), str(max(steps)) if steps else "-",
                     f"{loss[-1][1]:.4g}" if loss else "-"])  # fmt: skip
    return Section("Runs", "runs", tables=[("", Table(["run", "recipe", "folder", "last step", "last loss"], rows))])


def diff_section(runs: Sequence[RunSummary]) -> Section:
    first = runs[0]
    section = Section("What each recipe changes", "changes", text=f"Against the first run, {first.name}.")
    for run in runs[1:]:
        rows = [[key, _show(a), _show(b)] for key, a, b in recipe_diff(first.recipe, run.recipe)]
        table = Table(["key", first.name, run.name], rows or [["(no differences)", "", ""]], css="diff")
        section.tables.append((f"{run.name} against {first.name}", table))
    if len(runs) == 1:
        section.text = "One run: nothing to compare against."
    return section


def _metrics(runs: Sequence[RunSummary]) -> list[str]:
    seen: list[str] = []
    for run in runs:
        for row in ((run.evaluation or {}).get("tasks") or {}).values():
            seen += [m for m in row if m != "images" and not m.endswith("_in") and m not in seen]
    return seen


def _published(runs: Sequence[RunSummary]) -> dict[str, dict[str, Any]]:
    """method -> its published entry, from every run's recipe (the first recipe naming a method wins)."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        for method, entry in (run.recipe.get("published") or {}).items():
            if isinstance(entry, dict) and isinstance(entry.get("tasks"), dict):
                out.setdefault(str(method), entry)
    return out


def _directions(runs: Sequence[RunSummary]) -> dict[str, bool]:
    """Each eval metric's ``higher_is_better`` (the Metric contract), from the runs' recipes."""
    out: dict[str, bool] = {}
    for run in runs:
        try:
            directions = metric_directions(eval_config(run.recipe, f"{run.folder}/recipe.yaml"))
        except RestorekitError:  # a metric plugin not installed here: its column is shown unmarked
            continue
        out = {**directions, **out}
    return out


def eval_section(runs: Sequence[RunSummary]) -> Section:
    section = Section("Evaluation", "evaluation")
    scored = [r for r in runs if r.evaluation]
    if not scored:
        section.text = "No run has a final evaluation (eval/eval.json)."
        return section
    published = _published(runs)
    missing = [r.name for r in runs if not r.evaluation]
    notes = []
    protocols = {r.name: (r.evaluation or {}).get("protocol") for r in scored}
    if len({repr(p) for p in protocols.values()}) > 1:
        notes.append("the runs were scored under different protocols (see each eval.json): compare with care")
    if missing:
        notes.append(f"no eval/eval.json in: {', '.join(missing)}")
    if published:
        notes.append("published: " + "; ".join(f"{m}: {e.get('citation', '')}" for m, e in published.items()))
    section.text = "; ".join(notes)
    tasks: list[str] = []
    for run in scored:
        tasks += [t for t in run.evaluation["tasks"] if t not in tasks]  # type: ignore[index]
    directions = _directions(runs)
    for metric in _metrics(runs):
        head = ["task", "input"] + [r.name for r in scored] + [f"{m} (published)" for m in published]
        rows = []
        for task in tasks:
            rows.append([task, _first_input(scored, task, metric)]
                        + [_fmt(metric, r.evaluation["tasks"].get(task, {}).get(metric)) for r in scored]  # type: ignore[index]
                        + [_fmt(metric, (e["tasks"].get(task) or {}).get(metric)) for e in published.values()])  # fmt: skip
        if len(tasks) > 1:
            rows.append(["mean", _fmt(metric, (scored[0].evaluation.get("mean") or {}).get(f"{metric}_in"))]  # type: ignore[union-attr]
                        + [_fmt(metric, (r.evaluation.get("mean") or {}).get(metric)) for r in scored]  # type: ignore[union-attr]
                        + ["-" for _ in published])  # fmt: skip
        css = "scores" if metric in directions else "scores unmarked"
        section.tables.append(
            (metric.upper(), Table(head, rows, css=css, higher_is_better=directions.get(metric, True)))
        )
    return section


def _first_input(runs: Sequence[RunSummary], task: str, metric: str) -> str:
    for run in runs:
        value = run.evaluation["tasks"].get(task, {}).get(f"{metric}_in")  # type: ignore[index]
        if value is not None:
            return _fmt(metric, value)
    return "-"


def _summary(series: dict[str, list[tuple[float, float]]], metric: str, higher_is_better: bool) -> Table:
    rows = []
    for name, pts in series.items():
        finite = [(x, y) for x, y in pts if math.isfinite(y)]
        if not finite:
            rows.append([name, "-", "-"])
            continue
        best = (max if higher_is_better else min)(finite, key=lambda p: p[1])
        rows.append([name, f"{_fmt(metric, finite[-1][1])} (step {finite[-1][0]:.0f})",
                     f"{_fmt(metric, best[1])} (step {best[0]:.0f})"])  # fmt: skip
    return Table(["run", "last", "best"], rows)


def curves_section(runs: Sequence[RunSummary]) -> Section:
    section = Section("Training curves", "curves")
    losses = {r.name: r.loss_curve() for r in runs}
    if any(losses.values()):
        svg = line_chart("training loss", losses, "step", "loss")
        section.charts.append(("training loss", svg, _summary(losses, "loss", higher_is_better=False)))
    tasks: list[str] = []
    per_run = {r.name: r.validation_curves("psnr") for r in runs}
    for curves in per_run.values():
        tasks += [t for t in curves if t not in tasks]
    for task in tasks:
        series = {name: curves.get(task, []) for name, curves in per_run.items()}
        svg = line_chart(f"validation PSNR: {task}", series, "step", "PSNR (dB)")
        section.charts.append((f"validation PSNR: {task}", svg, _summary(series, "psnr", higher_is_better=True)))
    if not section.charts:
        section.text = "No training records (metrics.jsonl) in these runs."
    return section


def _png_uri(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def crop_box(sizes: Sequence[tuple[int, int]], crop: int) -> tuple[int, int, int, int]:
    """The centre ``crop`` x ``crop`` box (left, top, right, bottom) inside every (width, height) given."""
    width, height = min(w for w, _ in sizes), min(h for _, h in sizes)
    side_w, side_h = min(crop, width), min(crop, height)
    left, top = (width - side_w) // 2, (height - side_h) // 2
    return left, top, left + side_w, top + side_h


def images_section(runs: Sequence[RunSummary], crop: int, max_images: int) -> Section:
    section = Section("Restored images", "images")
    with_outputs = [r for r in runs if r.outputs]
    if with_outputs:
        shared = [k for k in with_outputs[0].outputs if all(k in r.outputs for r in with_outputs)][:max_images]
        for key in shared:
            opened = [(r.name, Image.open(r.outputs[key])) for r in with_outputs]
            box = crop_box([im.size for _, im in opened], crop)
            cells = [(name, _png_uri(im.convert("RGB").crop(box))) for name, im in opened]
            section.images.append((f"{key}: crop {box[2] - box[0]}x{box[3] - box[1]} at ({box[0]}, {box[1]})", cells))
        section.text = "The same centre crop of each run's restored test image (eval/outputs)."
    grids = [r for r in runs if r.grid is not None and not r.outputs]
    for run in grids:
        image = Image.open(run.grid).convert("RGB")
        if image.width > GRID_WIDTH:
            image = image.resize((GRID_WIDTH, round(image.height * GRID_WIDTH / image.width)), Image.LANCZOS)
        section.images.append((f"{run.name}: before/after grid (eval/grid.png)", [(run.name, _png_uri(image))]))
    if not section.images:
        section.text = "No restored images (eval/outputs) and no grids (eval/grid.png) in these runs."
    return section


def build_sections(runs: Sequence[RunSummary], *, crop: int = 96, max_images: int = 4) -> list[Section]:
    return [runs_section(runs), diff_section(runs), eval_section(runs), curves_section(runs),
            images_section(runs, crop, max_images)]  # fmt: skip


# -- HTML ------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
table.scores td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #eef6ee; }
table.diff td { font-family: ui-monospace, monospace; font-size: .9em; }
.caption { font-weight: 600; margin: .8em 0 .2em; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em; }
.chart { flex: 0 0 auto; }
svg.curve text { font: 11px system-ui, sans-serif; fill: #333; } svg.curve .title { font-weight: 600; font-size: 12px; }
svg.curve .frame { fill: none; stroke: #999; } svg.curve .grid { stroke: #eee; }
.crops { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: .85em; text-align: center; }
img.crop { width: 256px; image-rendering: pixelated; cursor: zoom-in; }
img.crop.zoomed { width: 512px; cursor: zoom-out; }
"""

SCRIPT = """
document.querySelectorAll("img.crop").forEach(function (img) {
  img.addEventListener("click", function () { img.classList.toggle("zoomed"); });
});
document.querySelectorAll("table.scores:not(.unmarked)").forEach(function (table) {
  var higher = table.dataset.higher === "1";
  table.querySelectorAll("tbody tr").forEach(function (row) {
    var cells = Array.prototype.slice.call(row.querySelectorAll("td.run"));
    var values = cells.map(function (c) { return parseFloat(c.textContent); });
    var finite = values.filter(function (v) { return isFinite(v); });
    if (finite.length < 2) { return; }
    var best = higher ? Math.max.apply(null, finite) : Math.min.apply(null, finite);
    cells.forEach(function (c, i) { if (values[i] === best) { c.classList.add("best"); } });
  });
});
"""


def _html_table(table: Table, run_columns: set[int] | None = None) -> str:
    attrs = f' class="{table.css}"' if table.css else ""
    if table.css == "scores":
        attrs += f' data-higher="{1 if table.higher_is_better else 0}"'
    head = "".join(f"<th>{escape(h)}</th>" for h in table.head)
    body = []
    for row in table.rows:
        cells = "".join(
            f'<td class="run">{escape(c)}</td>' if run_columns and i in run_columns else f"<td>{escape(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(sections: Sequence[Section], title: str, run_count: int) -> str:
    parts = [f"<h1>{escape(title)}</h1>", "<nav>" + " | ".join(f'<a href="#{s.anchor}">{escape(s.title)}</a>'
                                                              for s in sections) + "</nav>"]  # fmt: skip
    for section in sections:
        parts.append(f'<section id="{section.anchor}"><h2>{escape(section.title)}</h2>')
        if section.text:
            parts.append(f"<p>{escape(section.text)}</p>")
        for caption, table in section.tables:
            if caption:
                parts.append(f'<div class="caption">{escape(caption)}</div>')
            columns = set(range(2, 2 + run_count)) if table.css.startswith("scores") else None
            parts.append(_html_table(table, columns))
        if section.charts:
            parts.append('<div class="charts">')
            for _, svg, summary in section.charts:
                parts.append(f'<div class="chart">{svg}{_html_table(summary)}</div>')
            parts.append("</div>")
        for caption, cells in section.images:
            parts.append(f'<div class="caption">{escape(caption)}</div><div class="crops">')
            for name, uri in cells:
                css = "crop" if len(cells) > 1 or "grid" not in caption else "grid"
                parts.append(f'<figure><img class="{css}" src="{uri}" alt="{escape(name)}: {escape(caption)}">'
                             f"<figcaption>{escape(name)}</figcaption></figure>")  # fmt: skip
            parts.append("</div>")
        parts.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(parts)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )


# -- markdown --------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    align = ["---"] + (
        ["---:"] * (len(table.head) - 1) if table.css.startswith("scores") else ["---"] * (len(table.head) - 1)
    )
    lines = ["| " + " | ".join(map(_md_cell, table.head)) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(sections: Sequence[Section], title: str) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        for caption, table in section.tables:
            if caption:
                lines += [f"**{caption}**", ""]
            lines += [_md_table(table), ""]
        for caption, _, summary in section.charts:
            lines += [f"**{caption}** (the curve is in the HTML report)", "", _md_table(summary), ""]
        for caption, cells in section.images:
            lines += [f"**{caption}**", ""]
            lines += [f"![{name}]({uri})" for name, uri in cells]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    runs: Sequence[RunSummary], html_file: Path, *, overwrite: bool = False, crop: int = 96, max_images: int = 4
) -> tuple[Path, Path]:
    """Write the page and its markdown twin (same stem, ``.md``), each atomically; returns both paths.

    Without ``overwrite`` each is created exclusively: a file that appears meanwhile is kept.
    """
    sections = build_sections(runs, crop=crop, max_images=max_images)
    title = "restorekit report: " + ", ".join(r.name for r in runs)
    md_file = html_file.with_suffix(".md")
    texts = {html_file: render_html(sections, title, sum(1 for r in runs if r.evaluation)),
             md_file: render_markdown(sections, title)}  # fmt: skip
    for path, text in texts.items():
        try:
            with atomic_path(path, replace=overwrite) as tmp:
                tmp.write_text(text, encoding="utf-8")
        except AppearedMeanwhile as exc:
            raise OutputExistsError(f"-o {path} {exc.strerror}") from exc
    return html_file, md_file
