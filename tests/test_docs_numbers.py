"""Numbers quoted in the docs are checked against their source: the file a benchmark wrote, the
list a script runs, or the one page that holds them. A number typed by hand that drifts from its
source fails here (the slips of issue 28: recipe counts, mutation counts, demo tables)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOPS = ROOT / "benchmarks" / "results" / "flops.json"


def load_script(path: Path, name: str):
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # benchmarks/speed.py imports its helpers by name
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def page(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def table_after(text: str, header_start: str) -> list[list[str]]:
    """The body rows of the markdown table whose header line starts with ``header_start``."""
    lines = text[text.index(header_start) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def matches(shown: str, value: float) -> bool:
    """``shown`` is ``value`` rounded to the digits it shows (half a unit of its last digit)."""
    number = Decimal(shown.split()[0].replace(",", ""))
    half_unit = Decimal(1).scaleb(number.as_tuple().exponent) / 2
    return abs(Decimal(repr(value)) - number) <= half_unit


def test_matches_reads_the_shown_precision() -> None:
    assert matches("1,161", 1161.4) and not matches("1,151", 1151.6)
    assert matches("2.7", 2.74) and not matches("2.70", 2.706) and matches("0.0431", 0.04306)
    assert matches("1.42 (PromptIR)", 1.4249)


@pytest.fixture(scope="module")
def speed():
    return load_script(ROOT / "benchmarks" / "speed.py", "_docs_numbers_speed")


def test_the_recipe_counts_are_speed_pys_default_list(speed) -> None:
    count = len(speed.default_recipes())
    quoted = {
        "docs/performance.md": re.findall(r"defaults, (\d+) recipes", page("docs/performance.md")),
        "benchmarks/README.md": re.findall(r"default, (\d+) recipes", page("benchmarks/README.md"))
        + re.findall(r"all (\d+) recipes\b", page("benchmarks/README.md")),
    }
    for where, numbers in quoted.items():
        assert numbers, f"{where} no longer says how many recipes speed.py runs"
        assert all(int(n) == count for n in numbers), f"{where} says {numbers} recipes; speed.py runs {count}"


def test_the_flop_table_is_the_file_speed_py_meta_wrote(speed) -> None:
    result = json.loads(FLOPS.read_text(encoding="utf-8"))
    assert result["config"]["meta"] and not result["config"]["tiny"] and not result["config"]["overrides"]
    measured = {row["recipe"]: row for row in result["rows"]}
    table = table_after(page("docs/performance.md"), "| recipe | trainable M | frozen M | TFLOP per step")
    assert [row[0] for row in table] and {row[0] for row in table} == set(measured) == set(speed.default_recipes())
    for recipe, trainable, frozen, tflop, x_train, gmacs, x_infer in table:
        row = measured[recipe]
        body = speed.comparable_body(result["rows"], row)
        expected = {
            "trainable M": (trainable, row["params_trainable"] / 1e6),
            "frozen M": (frozen, row["params_frozen"] / 1e6),
            "TFLOP": (tflop, row["train"]["flops_per_step"] / 1e12),
            "x body (train)": (x_train, row["train"]["flops_per_step"] / body["train"]["flops_per_step"]),
            "GMACs": (gmacs, row["infer"]["gmacs"]),
            "x body (infer)": (x_infer, row["infer"]["gmacs"] / body["infer"]["gmacs"]),
        }
        for column, (shown, value) in expected.items():
            assert matches(shown, value), f"performance.md {recipe} {column}: {shown}, {FLOPS.name} says {value:.4g}"


def test_the_mutation_counts_are_the_tables_and_the_list() -> None:
    check = load_script(ROOT / "scripts" / "mutation_check.py", "_docs_numbers_mutation_check")
    listed = {m.name for m in check.MUTATIONS}
    text = page("docs/testing.md")
    section = text[text.index("### Last result") :]
    tables = [table_after(part, "| result | mutation |") for part in section.split("Summary:")[:-1]]
    summaries = re.findall(r"Summary: (\d+) mutations, (\d+) killed", section)
    assert len(summaries) == len(tables) >= 1
    for rows, (count, killed) in zip(tables, summaries):
        assert int(count) == len(rows), f"testing.md says {count} mutations under a table of {len(rows)}"
        assert int(killed) == sum(row[0] == "KILLED" for row in rows)
    in_tables = [row[1].strip("`") for rows in tables for row in rows]
    assert len(in_tables) == len(set(in_tables)) and set(in_tables) == listed
    for total in re.findall(r"\((\d+) in the list\)", section):
        assert int(total) == len(check.MUTATIONS)


DEMO_ROW = re.compile(r"^\| (noise|rain|haze|\*\*mean\*\*) \| .*\|$", re.MULTILINE)


def test_the_demo_numbers_are_quoted_from_one_place() -> None:
    """training.md holds the demo's table, one of the runs reproduce.md records from the files they
    wrote (it lists other thread counts too); any other page quoting a row quotes training.md's."""
    source = {m.group(1): m.group(0) for m in DEMO_ROW.finditer(page("docs/training.md"))}
    assert set(source) == {"noise", "rain", "haze", "**mean**"}
    assert "\n".join(source.values()) in page("docs/reproduce.md")
    for name in ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")):
        if name in ("docs/training.md", "docs/reproduce.md"):
            continue
        text = page(name)
        for match in DEMO_ROW.finditer(text):
            if match.group(0).count("|") == source[match.group(1)].count("|"):  # the eval table's columns
                assert match.group(0) == source[match.group(1)], f"{name} quotes the demo as {match.group(0)}"
