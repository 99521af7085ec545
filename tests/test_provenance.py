"""The provenance tables in docs/models.md, the dino_ir recipes and the docs stay in step.

Every key of the ``dino_ir`` recipe's model, loss and train sections has a row that says
whether the paper states it, a related method gave it or restorekit chose it; no row
names a key the recipe or its parts do not know; the recipes' comments mark each key;
nothing calls restorekit's choices the paper's defaults.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from restorekit.recipes import load_recipe
from restorekit.registry import KINDS, registry

ROOT = Path(__file__).resolve().parents[1]
MODELS_DOC = ROOT / "docs" / "models.md"
HEADING = "## Provenance"
LABELS = ("paper (abstract)", "related method: ", "restorekit default")
REQUIRED_SECTIONS = ("model", "loss", "train")
CHOICE_SECTIONS = ("model", "loss", "data", "train", "eval")
COMMENTED_RECIPES = ("dino_ir.yaml", "dino_ir_4task.yaml", "dino_ir_5task.yaml")
KEY = re.compile(r"`([^`]+)`")
TERM_KEY = re.compile(r"^loss\.terms\[(\w+)\]\.(\w+)$")
PROVENANCE_COMMENT = re.compile(r"#\s*(paper|from \S|restorekit)")
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".txt", ".toml", ".cfg"}


# -- reading the tables -------------------------------------------------------------
def provenance_rows(doc: str) -> list[dict[str, str]]:
    """The rows of every table under the Provenance heading, as {column: cell}."""
    assert f"\n{HEADING}\n" in doc, f"docs/models.md has no '{HEADING}' section"
    section = doc.split(f"\n{HEADING}\n", 1)[1].split("\n## ", 1)[0]
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in section.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(set(cell) <= set("-: ") for cell in cells):
            rows.append(dict(zip(header, cells)))
    assert rows, "the Provenance section has no table rows"
    return rows


def table_keys(rows: list[dict[str, str]]) -> set[str]:
    return {key for row in rows for key in KEY.findall(row["recipe key"])}


# -- what the recipe and its parts know ---------------------------------------------
def dotted_keys(node: Any, prefix: str) -> set[str]:
    """Dotted keys of a recipe section; a list of typed specs expands as ``name[type].key``."""
    if isinstance(node, Mapping) and node:
        return set().union(*(dotted_keys(value, f"{prefix}.{key}") for key, value in node.items()))
    if isinstance(node, list) and node and all(isinstance(item, Mapping) and "type" in item for item in node):
        return set().union(
            *(dotted_keys({k: v for k, v in item.items() if k != "type"}, f"{prefix}[{item['type']}]") for item in node)
        )
    return {prefix}


def constructor_keys(kind: str, name: str) -> set[str]:
    return set(inspect.signature(registry(kind).get(name)).parameters)


def part_knows(key: str, recipe: Mapping[str, Any]) -> bool:
    """Whether ``key`` is a constructor argument of the model or of one of its parts or loss terms."""
    model = recipe["model"]
    parts = key.split(".")
    if parts[0] == "model" and len(parts) == 2:
        return parts[1] in constructor_keys("model", model["type"])
    if parts[0] == "model" and len(parts) == 3 and parts[1] in KINDS and isinstance(model.get(parts[1]), Mapping):
        return parts[2] in constructor_keys(parts[1], model[parts[1]]["type"])
    term = TERM_KEY.match(key)
    if term:
        types = {spec["type"] for spec in recipe["loss"]["terms"]}
        return term[1] in types and term[2] in constructor_keys("loss", term[1])
    return False


def unknown_keys(keys: set[str], recipe: Mapping[str, Any]) -> list[str]:
    """Table keys that neither the recipe (a key or a prefix of one) nor its parts know."""
    known = set().union(*(dotted_keys(recipe.get(section), section) for section in CHOICE_SECTIONS))
    return sorted(
        key for key in keys
        if not any(k == key or k.startswith((key + ".", key + "[")) for k in known) and not part_knows(key, recipe)
    )  # fmt: skip


def missing_keys(keys: set[str], recipe: Mapping[str, Any]) -> list[str]:
    required = set().union(*(dotted_keys(recipe[section], section) for section in REQUIRED_SECTIONS))
    return sorted(required - keys)


# -- the tests ------------------------------------------------------------------------
def test_every_model_loss_and_train_key_of_dino_ir_has_a_row() -> None:
    keys = table_keys(provenance_rows(MODELS_DOC.read_text(encoding="utf-8")))
    assert missing_keys(keys, load_recipe("dino_ir")) == []


def test_the_table_names_no_key_the_recipe_or_its_parts_do_not_know() -> None:
    keys = table_keys(provenance_rows(MODELS_DOC.read_text(encoding="utf-8")))
    assert unknown_keys(keys, load_recipe("dino_ir")) == []


def test_a_stale_or_missing_row_is_caught() -> None:
    doc = MODELS_DOC.read_text(encoding="utf-8")
    recipe = load_recipe("dino_ir")
    without_stride = "\n".join(line for line in doc.splitlines() if "`model.guide_stride`" not in line)
    stale = doc.replace("`model.fusion.num_experts`", "`model.fusion.experts`")
    assert missing_keys(table_keys(provenance_rows(without_stride)), recipe) == ["model.guide_stride"]
    stale_keys = table_keys(provenance_rows(stale))
    assert unknown_keys(stale_keys, recipe) == ["model.fusion.experts"]
    assert "model.fusion.num_experts" in missing_keys(stale_keys, recipe)


def test_every_row_names_its_provenance() -> None:
    for row in provenance_rows(MODELS_DOC.read_text(encoding="utf-8")):
        provenance = row["provenance"]
        assert provenance.startswith(LABELS), f"row {row['choice']!r}: provenance {provenance!r}"
        assert provenance != LABELS[1].strip(), f"row {row['choice']!r} names no related method"
        assert KEY.search(row["recipe key"]) or row["recipe key"] == "none", row


def test_the_recipe_comments_mark_every_key() -> None:
    for name in COMMENTED_RECIPES:
        section = None
        for number, line in enumerate((ROOT / "recipes" / name).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not line[0].isspace():
                section = line.split(":", 1)[0]
            if section in CHOICE_SECTIONS:
                assert PROVENANCE_COMMENT.search(line), f"recipes/{name}:{number} has no provenance comment: {line}"


def test_nothing_calls_the_defaults_the_papers() -> None:
    files = [ROOT / "README.md"] + [
        path for folder in ("docs", "recipes", "src") for path in (ROOT / folder).rglob("*")
        if path.suffix in TEXT_SUFFIXES
    ]  # fmt: skip
    offenders = [str(p.relative_to(ROOT)) for p in files if "paper default" in p.read_text(encoding="utf-8").lower()]
    assert offenders == []
    assert "docs/models.md#provenance" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_rows_follow_the_summarys_words() -> None:
    """Self-attention, "pre-trained", "different layers": what the summary says is labelled paper, the rest not."""
    rows = provenance_rows(MODELS_DOC.read_text(encoding="utf-8"))
    by_value = {row["value in `dino_ir`"]: row for row in rows}
    assert by_value["`self_attention`"]["provenance"] == "paper (abstract)"
    assert load_recipe("dino_ir")["model"]["adapter"]["fusion"] == "self_attention"
    assert by_value["4 blocks"]["provenance"] == "restorekit default"
    frozen = [row for row in rows if "frozen" in row["choice"]]
    assert frozen and all(row["provenance"].startswith("restorekit default") for row in frozen)
    assert by_value["`dino_ir_4task`"]["provenance"] == "paper (abstract)"
    assert "PSF" in next(row["choice"] for row in rows if row["choice"].startswith("MSF form"))


def test_no_text_says_the_paper_itself_was_never_released() -> None:
    """The paper is public (arXiv 2312.01677); its code and configurations are not."""
    files = [ROOT / "README.md"] + [
        path for folder in ("docs", "recipes") for path in (ROOT / folder).rglob("*") if path.suffix in TEXT_SUFFIXES
    ]
    offenders = [str(p.relative_to(ROOT)) for p in files if "full text" in p.read_text(encoding="utf-8")]
    assert offenders == []
