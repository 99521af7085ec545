"""docs/reproduce.md names only commands, recipes, benchmarks and options that exist."""

from __future__ import annotations

import re
from pathlib import Path

from restorekit.cli import COMMANDS
from restorekit.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "reproduce.md").read_text(encoding="utf-8")


def test_every_restorekit_command_exists() -> None:
    used = set(re.findall(r"`restorekit (\w+)", DOC))
    assert used and used <= set(COMMANDS), sorted(used - set(COMMANDS))


def test_every_recipe_named_loads() -> None:
    names = set(re.findall(r"(?:train|eval|diff \S+|against|gates) `?((?:ablations|baselines)/\w+|dino_ir\w*)", DOC))
    names |= set(re.findall(r"`((?:ablations|baselines)/\w+|dino_ir(?:_\dtask)?)`", DOC))
    names = {n for n in names if "*" not in n}
    assert {"dino_ir_4task", "ablations/dr_cross_attention", "baselines/adair_4task"} <= names
    for name in names:
        assert load_recipe(name)["name"] == name


def test_every_script_named_exists_and_every_section_is_filled() -> None:
    scripts = set(re.findall(r"((?:benchmarks|scripts)/\w+\.py)", DOC))
    assert {"benchmarks/unseen_gap.py", "benchmarks/task_scaling.py"} <= scripts
    assert all((ROOT / s).is_file() for s in scripts), [s for s in scripts if not (ROOT / s).is_file()]
    assert not re.search(r"\b[A-Z0-9]+_NUMBERS\b", DOC)  # no placeholder left unfilled
    for question in range(1, 11):  # every question of the summary has a row
        assert re.search(rf"^\| Q{question}:", DOC, re.M), f"Q{question}"
