"""The model card (``README.md``) of a pretrained package, made from its manifest, recipe and eval.json.

The Hugging Face Hub reads the YAML front matter (licence, library, tags); people
read the rest: the per-task table with its protocol line, the published numbers
beside it when the recipe has them, what the model is made of (recipe, parameter
counts, frozen parts by name and sha256), the data, how to load it, the licence
and the citations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from restorekit.engine.config import eval_config
from restorekit.engine.evaluate import markdown_table, metric_directions
from restorekit.published import published_tables

CITATIONS: dict[str, str] = {
    "dino_ir": """@article{lin2023dinoir,
  title={Multi-task Image Restoration Guided By Robust DINO Features},
  author={Lin, Xin and Yue, Jingtong and Chan, Kelvin C. K. and Qi, Lu and Ren, Chao and Pan, Jinshan and Yang, Ming-Hsuan},
  journal={arXiv preprint arXiv:2312.01677},
  year={2023}
}""",
    "promptir": """@inproceedings{potlapalli2023promptir,
  title={PromptIR: Prompting for All-in-One Image Restoration},
  author={Potlapalli, Vaishnav and Zamir, Syed Waqas and Khan, Salman and Khan, Fahad},
  booktitle={Thirty-seventh Conference on Neural Information Processing Systems},
  year={2023}
}""",
    "restormer": """@inproceedings{zamir2022restormer,
  title={Restormer: Efficient Transformer for High-Resolution Image Restoration},
  author={Zamir, Syed Waqas and Arora, Aditya and Khan, Salman and Hayat, Munawar and Khan, Fahad Shahbaz and Yang, Ming-Hsuan},
  booktitle={CVPR},
  year={2022}
}""",
    "adair": """@inproceedings{cui2025adair,
  title={Ada{IR}: Adaptive All-in-One Image Restoration via Frequency Mining and Modulation},
  author={Yuning Cui and Syed Waqas Zamir and Salman Khan and Alois Knoll and Mubarak Shah and Fahad Shahbaz Khan},
  booktitle={The Thirteenth International Conference on Learning Representations},
  year={2025}
}""",
    "moce_ir": """@misc{zamfir2024complexityexperts,
  title={Complexity Experts are Task-Discriminative Learners for Any Image Restoration},
  author={Eduard Zamfir and Zongwei Wu and Nancy Mehta and Yuedong Tan and Danda Pani Paudel and Yulun Zhang and Radu Timofte},
  year={2024},
  eprint={2411.18466},
  archivePrefix={arXiv},
  primaryClass={cs.CV}
}""",
}
"""BibTeX of the architecture each builtin model type implements (each as its authors' README gives it)."""

CITED_AS = {"moce_ir_s": "moce_ir"}
"""Model types that are a preset of another architecture: cited as that one."""

NO_LICENSE = "other"  # the Hub's value when the licence is not one of its identifiers


def render_card(manifest: Mapping[str, Any], recipe: Mapping[str, Any], report: Mapping[str, Any] | None) -> str:
    """The README.md text of a package."""
    sections = [
        _front_matter(manifest),
        f"# {recipe.get('name') or manifest.get('model_type') or 'restorekit model'}",
        str(recipe.get("description") or "").strip(),
        _results(recipe, report),
        _model(manifest, recipe),
        _data(recipe),
        _use(manifest),
        _licence(manifest),
        _citation(manifest, recipe),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _front_matter(manifest: Mapping[str, Any]) -> str:
    tags = ["image-restoration", "restorekit"] + ([str(manifest["model_type"])] if manifest.get("model_type") else [])
    return "\n".join(["---", f"license: {manifest.get('license') or NO_LICENSE}", "library_name: restorekit",
                      "tags:", *[f"- {t}" for t in tags], "---"])  # fmt: skip


def _results(recipe: Mapping[str, Any], report: Mapping[str, Any] | None) -> str:
    if not report:
        return ("## Results\n\nNo evaluation was recorded with these weights. Score them with "
                "`restorekit eval RECIPE --weights THIS_FOLDER --report DIR` and package again with "
                "`--eval DIR/eval.json`.")  # fmt: skip
    result = {"tasks": report["tasks"], "mean": report.get("mean", {})}
    lines = ["## Results", "", markdown_table(result, report.get("protocol"))]
    directions = metric_directions(eval_config(recipe, "recipe.yaml")) if recipe.get("published") else {}
    published = published_tables(result, recipe.get("published"), directions)
    if published:
        lines += ["", "Published numbers on the same protocol (measured minus published):", "", published]
    return "\n".join(lines)


def _model(manifest: Mapping[str, Any], recipe: Mapping[str, Any]) -> str:
    params = manifest.get("params") or {}
    weights = manifest.get("weights") or {}
    lines = ["## Model", "", f"* type: `{manifest.get('model_type')}`; recipe: `{recipe.get('name')}` "
             "(the full resolved recipe is `recipe.yaml`)"]  # fmt: skip
    if params:
        lines.append(
            f"* parameters: {params.get('trainable', 0):,} trainable (in `model.safetensors`), "
            f"{params.get('frozen', 0):,} frozen (not included)"
        )
    if weights.get("checkpoint"):
        lines.append(
            f"* weights: {'EMA' if weights.get('ema') else 'raw'} weights of {weights['checkpoint']} "
            f"(step {weights.get('step')})"
        )
    frozen = manifest.get("frozen") or {}
    if frozen:
        lines += ["", "Frozen parts are not in this package; each loads from its own source and is checked "
                  "against the sha256 it was trained with:", "", "| part | name | weights | sha256 |",
                  "|---|---|---|---|"]  # fmt: skip
        for prefix, record in frozen.items():
            weights_text = record.get("weights") or "random initialisation"
            lines.append(
                f"| `{prefix or 'model'}` | {record.get('name')} | {weights_text} | {record.get('sha256') or '-'} |"
            )
    return "\n".join(lines)


def _data(recipe: Mapping[str, Any]) -> str:
    data = recipe.get("data") or {}
    rows = []
    for split in ("train", "val"):
        for task, entry in (data.get(split) or {}).items():
            dataset = (entry or {}).get("dataset", {}) if isinstance(entry, Mapping) else {}
            kind = dataset.get("type", "?") if isinstance(dataset, Mapping) else str(dataset)
            knobs = {k: v for k, v in dataset.items() if k != "type"} if isinstance(dataset, Mapping) else {}
            rows.append(f"| {split} | {task} | {kind} | {knobs or ''} |")
    if not rows:
        return ""
    train = recipe.get("train") or {}
    head = (
        f"Trained for {train.get('iterations')} iterations, global batch {train.get('batch_size')}, "
        f"{data.get('patch_size')} px patches."
        if train
        else ""
    )
    return "\n".join(["## Data", "", head, "", "| split | task | dataset | settings |", "|---|---|---|---|", *rows])


def _use(manifest: Mapping[str, Any]) -> str:
    return "\n".join([
        "## Use", "", "```python", "import restorekit", "",
        'model = restorekit.from_pretrained("THIS_FOLDER_OR_HUB_ID")   # eval mode; frozen parts from their source',
        "restored = model(images)   # (B, 3, H, W) in [0, 1]", "```", "",
        "```", "restorekit restore input.png output.png --weights THIS_FOLDER_OR_HUB_ID", "```",
    ])  # fmt: skip


def _licence(manifest: Mapping[str, Any]) -> str:
    licence = manifest.get("license")
    text = licence or (
        "not stated by whoever packaged these weights; ask them before reuse (the frozen parts keep their own licences)"
    )
    return f"## Licence\n\n{text}"


def architectures(manifest: Mapping[str, Any], recipe: Mapping[str, Any]) -> list[str]:
    """The model type and, for a guided model, the type of the body it guides (each is cited)."""
    model_type = str(manifest.get("model_type"))
    model = recipe.get("model")
    body = model.get("body") if isinstance(model, Mapping) else None
    if model_type != "dino_ir":
        return [model_type]
    body_type = body if isinstance(body, str) else body.get("type") if isinstance(body, Mapping) else None
    return [model_type, str(body_type or "restormer")]


def _citation(manifest: Mapping[str, Any], recipe: Mapping[str, Any]) -> str:
    entries = [manifest.get("citation")] + [CITATIONS.get(CITED_AS.get(t, t)) for t in architectures(manifest, recipe)]
    entries = [e for e in entries if e]
    if not entries:
        return ""
    return "## Citation\n\n" + "\n\n".join(f"```bibtex\n{e.strip()}\n```" for e in entries)
