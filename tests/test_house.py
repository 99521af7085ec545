"""House rules the code keeps: no private imports across modules, no duplicated constants."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "restorekit"


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(SRC.rglob("*.py"))]


def test_no_module_imports_another_modules_private_names() -> None:
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("restorekit"):
                found += [f"{path.relative_to(SRC)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in {"ckpt", "checkpoint", "registry", "recipes"}:
                    found.append(f"{path.relative_to(SRC)}: {owner.id}.{node.attr}")
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_module_level_constants_are_defined_once() -> None:
    """An upper-case constant defined in two modules (GRID_RULES, DEFAULT_BACKBONE) drifts apart."""
    where: dict[str, list[str]] = {}
    for path, tree in _modules():
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []  # fmt: skip
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper() and not target.id.startswith("_"):
                    where.setdefault(target.id, []).append(str(path.relative_to(SRC)))
    allowed = {"KINDS"}  # registry kinds vs listing
    twice = {name: files for name, files in where.items() if len(files) > 1 and name not in allowed}
    assert not twice, f"constants defined in several modules: {twice}"


def test_reliability_page_counts_the_fault_suite_and_names_existing_tests() -> None:
    """docs/reliability.md's summary is recounted here, and every test it names must exist."""
    import re

    tests_dir = Path(__file__).resolve().parent
    page = (tests_dir.parent / "docs" / "reliability.md").read_text(encoding="utf-8")

    def test_functions(name: str) -> set[str]:
        tree = ast.parse((tests_dir / name).read_text(encoding="utf-8"))
        return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}

    suite = {part: len(test_functions(f"test_faults_{part}.py")) for part in ("engine", "inputs", "cli")}
    named: set[tuple[str, str]] = set()
    for line in page.splitlines():
        current = None  # "`::test_x`" continues the file named last on the same line
        for file, test in re.findall(r"`(test_\w+\.py)?::(test_\w+)", line):
            current = file or current
            assert current, f"docs/reliability.md names ::{test} without its file"
            named.add((current, test))
    missing = sorted(f"{f}::{t}" for f, t in named if t not in test_functions(f))
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
    left_out = sorted(
        f"test_faults_{part}.py::{t}"
        for part in suite
        for t in test_functions(f"test_faults_{part}.py")
        if (f"test_faults_{part}.py", t) not in named
    )
    assert not left_out, f"fault tests docs/reliability.md does not list: {left_out}"
    summary = (
        f"The fault suite holds {sum(suite.values())} test functions (engine {suite['engine']}, "
        f"inputs {suite['inputs']}, command line {suite['cli']}), every one named below; with the older "
        f"tests that hold a guarantee, this page names {len(named)} tests"
    )
    assert summary in " ".join(page.split()), f"docs/reliability.md's summary should read: {summary!r}"
