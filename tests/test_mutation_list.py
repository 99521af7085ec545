"""The mutation check's list (scripts/mutation_check.py) matches the current source.

Each mutation finds its snippet exactly once and names tests that exist, so a moved
or rewritten line makes this test fail instead of the mutation silently not running.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_mutation_check():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_every_mutation_finds_its_snippet_and_its_tests() -> None:
    check = load_mutation_check()
    assert check.problems(ROOT) == []


def test_the_audited_mutations_and_every_claim_are_covered() -> None:
    check = load_mutation_check()
    names = {m.name for m in check.MUTATIONS}
    audited = {
        "restormer-skip-concat-order",
        "gdfn-gate-value-swap",
        "promptir-prompt3-concat-order",
        "resume-skips-rng-state",
        "run-json-records-no-plugins",
        "merge-type-without-base-type-replaces",
        "merge-switch-leaks-nested-mappings",
    }  # the survivors of issue 18's audit
    assert audited <= names
    second_audit = {
        "grad-clip-ignored",
        "ema-update-ignores-warmup",
        "cosine-ignores-min-lr-mid-course",
        "dr-query-sides-swapped",
        "dpc-cosine-over-width",
        "moce-router-keeps-one-expert",
        "moce-importance-cv-not-squared",
    }  # seven survivors of issue 30's audit
    assert second_audit <= names
    assert {m.claim for m in check.MUTATIONS} == set(check.CLAIMS)


def test_a_moved_snippet_is_reported(tmp_path: Path) -> None:
    check = load_mutation_check()
    first = check.MUTATIONS[0]
    target = tmp_path / first.file
    target.parent.mkdir(parents=True)
    target.write_text("# rewritten\n")
    assert any(p.startswith(f"{first.name}: snippet found 0 times") for p in check.problems(tmp_path))
