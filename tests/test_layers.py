"""The layers of docs/architecture.md, checked on the source: one direction, no cycles, imports on top.

Every module's imports are read with ``ast`` (those inside functions included; those
under ``if TYPE_CHECKING:`` never run and are skipped). A module may import its own
layer or a lower one; an import that goes up a layer, or one that closes a cycle
among modules, fails. Imports inside functions are allowed only where
:data:`FUNCTION_IMPORTS` lists them, each with its reason.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import restorekit.data.image_io as old_image_io
import restorekit.state_dict as old_state_dict
from restorekit.io import image_files, state_dict

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "restorekit"

# Lowest first; a module may import its own layer and those before it.
LAYERS = ("core", "io", "assembly", "parts", "models", "engine", "packaging", "apps")

# Module (or package prefix) -> layer. The longest matching prefix wins; every module must match.
LAYER_OF: dict[str, str] = {
    "restorekit.errors": "core",
    "restorekit.registry": "core",
    "restorekit.catalog": "core",
    "restorekit.value_types": "core",
    "restorekit.console": "core",
    "restorekit.contracts": "core",
    "restorekit.listing": "core",
    "restorekit.recipe_plugins": "core",
    "restorekit.version": "core",
    "restorekit.deprecation": "core",
    "restorekit.io": "io",
    "restorekit.state_dict": "io",  # deprecated alias of restorekit.io.state_dict
    "restorekit.hub": "io",  # a Hub id is a weights source: download (and push) of package folders
    "restorekit.recipes": "assembly",
    "restorekit.recipe_origins": "assembly",
    "restorekit.published": "assembly",
    "restorekit.building": "assembly",
    "restorekit.bodies": "parts",
    "restorekit.backbones": "parts",
    "restorekit.fusion": "parts",
    "restorekit.adapters": "parts",
    "restorekit.losses": "parts",
    "restorekit.metrics": "parts",
    "restorekit.data": "parts",
    "restorekit.frozen": "parts",
    "restorekit.params": "parts",
    "restorekit.models": "models",
    "restorekit.tiny": "models",
    "restorekit.engine": "engine",
    "restorekit.probe": "engine",
    "restorekit.pretrained": "packaging",
    "restorekit.model_card": "packaging",
    "restorekit.cli": "apps",
    "restorekit.app": "apps",  # the Gradio app
    "restorekit.report": "apps",  # runs side by side in one HTML page
    "restorekit.commands": "apps",
    "restorekit.__main__": "apps",
    "restorekit": "apps",  # the package's __init__: the public face re-exports from below
}

# (module, imported module) -> why the import sits inside a function.
FUNCTION_IMPORTS: dict[tuple[str, str], str] = {
    ("restorekit.commands.submit", "submitit"): "optional extra [submitit]",
    ("restorekit.commands.submit", "restorekit.commands.submit_job"): "optional extra [submitit]: imports submitit",
    ("restorekit.engine.loggers", "torch.utils.tensorboard"): "optional extra [tensorboard]",
    ("restorekit.commands.app", "restorekit.app.ui"): "optional extra [app]: Gradio, imported after its env variable",
    ("restorekit.building", "restorekit.contracts"): "contracts imports torch; `import restorekit` stays light",
    ("restorekit.engine.export", "onnxruntime"): "optional extra [export]",
    ("restorekit.engine.export", "onnxscript"): "optional extra [export]",
    ("restorekit.engine.runtime", "onnxruntime"): "optional extra [export]: --runtime onnxruntime",
    ("restorekit.engine.evaluate", "matplotlib.backends.backend_agg"): "heavy import: only the grid figure needs it",
    ("restorekit.engine.evaluate", "matplotlib.figure"): "heavy import: only the grid figure needs it",
    ("restorekit.engine.gates", "matplotlib.backends.backend_agg"): "heavy import: only the gate plot needs it",
    ("restorekit.engine.gates", "matplotlib.figure"): "heavy import: only the gate plot needs it",
    ("restorekit.probe", "matplotlib.backends.backend_agg"): "heavy import: only the probe plot needs it",
    ("restorekit.probe", "matplotlib.figure"): "heavy import: only the probe plot needs it",
}
MAX_FUNCTION_IMPORTS = 15  # the ceiling (from about 231)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def layer_of(module: str) -> str | None:
    """The layer of the longest prefix that names ``module`` (the package face only names itself)."""
    matches = [p for p in LAYER_OF if module == p or (p != PACKAGE and module.startswith(p + "."))]
    return LAYER_OF[max(matches, key=len)] if matches else None


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports_of(module: str, path: Path) -> list[tuple[str, bool, int]]:
    """``(imported module, inside a function, line)`` for each import that runs."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, bool, int]] = []

    def absolute(node: ast.ImportFrom) -> list[str]:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        # ``from restorekit.engine import checkpoint`` imports the submodule.
        submodules = [f"{stem}.{alias.name}" for alias in node.names]
        return [name for name in submodules if name in MODULES] or [stem]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.extend((name, in_function, child.lineno) for name in absolute(child))
            visit(child, inside)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


MODULES = all_modules()
IMPORTS = {module: imports_of(module, path) for module, path in MODULES.items()}


def internal_target(name: str) -> str | None:
    """The restorekit module ``name`` refers to (a module, or the package an attribute comes from)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_every_module_has_a_layer() -> None:
    unplaced = [module for module in MODULES if layer_of(module) is None]
    assert not unplaced, f"place these modules in LAYER_OF (tests/test_layers.py) and docs/architecture.md: {unplaced}"
    assert set(LAYER_OF.values()) <= set(LAYERS)
    stale = [prefix for prefix in LAYER_OF if not any(m == prefix or m.startswith(prefix + ".") for m in MODULES)]
    assert not stale, f"LAYER_OF names modules that no longer exist: {stale}"


def test_no_import_goes_up_a_layer() -> None:
    upward = []
    for module, imports in IMPORTS.items():
        mine = LAYERS.index(layer_of(module))
        for name, _, line in imports:
            target = internal_target(name)
            if target is None:
                continue
            theirs = LAYERS.index(layer_of(target))
            if theirs > mine:
                upward.append(f"{module} ({LAYERS[mine]}):{line} -> {target} ({LAYERS[theirs]})")
    assert not upward, "imports going up a layer:\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imports in IMPORTS.items():
        graph[module]  # noqa: B018 - every module is a node
        for name, _, _ in imports:
            target = internal_target(name)
            if target is not None and target != module and target != PACKAGE:
                graph[module].add(target)
    return graph


def test_no_import_cycle() -> None:
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def function_imports() -> list[tuple[str, str, int]]:
    return [(module, name, line) for module, imports in IMPORTS.items() for name, inside, line in imports if inside]


def test_imports_inside_functions_are_only_the_listed_ones() -> None:
    extra = [f"{m}:{line} imports {n}" for m, n, line in function_imports() if (m, n) not in FUNCTION_IMPORTS]
    assert not extra, (
        "imports inside functions that are not optional extras or CLI laziness (move them to the top, "
        "or list them with a reason in FUNCTION_IMPORTS):\n" + "\n".join(extra)
    )
    unused = set(FUNCTION_IMPORTS) - {(m, n) for m, n, _ in function_imports()}
    assert not unused, f"FUNCTION_IMPORTS lists imports that are no longer inside functions: {sorted(unused)}"
    inside = [(m, n) for m, n, _ in function_imports()]
    assert len(inside) <= MAX_FUNCTION_IMPORTS, f"{len(inside)} imports inside functions: {inside}"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import os\n\ndef f():\n    import json\n", [("os", False), ("json", True)]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n", [("typing", False)]),
        ("class A:\n    def m(self):\n        from restorekit import errors\n", [("restorekit.errors", True)]),
    ],
)
def test_import_reader_sees_function_imports_and_skips_type_checking(tmp_path, source, expected) -> None:
    path = tmp_path / "mod.py"
    path.write_text(source)
    got = [(name, inside) for name, inside, _ in imports_of("restorekit.mod", path)]
    assert got == expected


@pytest.mark.parametrize(
    "old, new, name",
    [(old_image_io, image_files, "read_image"), (old_state_dict, state_dict, "copy_into")],
)
def test_a_moved_public_module_still_answers_at_its_old_path_and_warns(old, new, name) -> None:
    with pytest.warns(DeprecationWarning, match=new.__name__):
        assert getattr(old, name) is getattr(new, name)
