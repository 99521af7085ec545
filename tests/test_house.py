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
    allowed = {"HELP", "KINDS"}  # each command module's help line; registry kinds vs listing
    twice = {name: files for name, files in where.items() if len(files) > 1 and name not in allowed}
    assert not twice, f"constants defined in several modules: {twice}"
