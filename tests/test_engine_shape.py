"""The training engine's classes stay small and their state is declared in ``__init__``.

A class whose attributes first appear in some method depends on the order its methods
are called in; the loop is kept short so each job lives in its own module (issue 22).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "src" / "restorekit" / "engine"
MODULES = ("loop.py", "train.py", "step.py", "training_state.py", "run.py", "callbacks.py", "precision.py")


def classes() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for name in MODULES:
        tree = ast.parse((ENGINE / name).read_text(encoding="utf-8"))
        found += [(name, node) for node in tree.body if isinstance(node, ast.ClassDef)]
    return found


def self_targets(function: ast.AST) -> set[str]:
    """Names of ``self.<name> = ...`` (plain, tuple, annotated or augmented) inside ``function``."""
    names = set()
    for node in ast.walk(function):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                    names.add(leaf.attr)
    return names


@pytest.mark.parametrize(("module", "cls"), classes(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_no_attribute_is_first_set_outside_init(module: str, cls: ast.ClassDef) -> None:
    methods = [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    init = next((m for m in methods if m.name == "__init__"), None)
    declared = self_targets(init) if init else set()
    declared |= {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    declared |= {
        m.name for m in methods if any(isinstance(d, ast.Name) and d.id == "property" for d in m.decorator_list)
    }
    later = {name for m in methods if m is not init for name in self_targets(m)} - declared
    assert not later, f"{module}: {cls.name} first sets {sorted(later)} outside __init__"


def test_the_loop_class_is_short() -> None:
    (loop,) = [cls for module, cls in classes() if cls.name == "TrainLoop"]
    assert loop.end_lineno - loop.lineno + 1 <= 250


def test_the_self_targets_finder_sees_each_kind_of_assignment() -> None:
    tree = ast.parse("def f(self):\n    self.a = 1\n    self.b, self.c = 2, 3\n    self.d: int = 4\n    self.e += 1\n")
    assert self_targets(tree) == {"a", "b", "c", "d", "e"}
