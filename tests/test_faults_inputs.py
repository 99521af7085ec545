"""Fault suite, bad inputs: wrong value types, bad arguments, unreadable and tiny images,
files that would be overwritten, file modes (docs/reliability.md lists what each covers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

import pytest
from hypothesis import given, strategies as st

from plugin_dists import write_dist
from restorekit.building import build
from restorekit.cli import main
from restorekit.errors import BuildError, RecipeError
from restorekit.value_types import fits, type_mismatches

SRC = Path(__file__).resolve().parents[1] / "src"


# -- 11: a wrong value type names the key, the expected and the given type -------------
def test_a_wrong_value_type_is_an_error_naming_key_expected_and_given_type() -> None:
    with pytest.raises(BuildError) as info:
        build("body", {"type": "restormer", "dim": "sixteen"})
    assert str(info.value) == "body 'restormer': wrong value type for dim: expected int, got str ('sixteen')"
    with pytest.raises(BuildError, match=r"num_blocks: expected list of int, got list \(\[1, 'x'\]\)"):
        build("body", {"type": "restormer", "num_blocks": [1, "x"]})


def test_the_command_line_reports_a_wrong_value_type_without_a_traceback(capsys: pytest.CaptureFixture) -> None:
    code = main(["show", "demo/restormer_tiny", "-o", "model.dim=sixteen", "--params"])
    err = capsys.readouterr().err
    assert code == 2 and "dim: expected int, got str ('sixteen')" in err and "Traceback" not in err


def _factory(count: int, rate: float, name: str, flag: bool, sizes: Sequence[int], pair: tuple[int, int],
             knobs: Mapping[str, float], mode: Literal["a", "b"], maybe: Optional[int], spec: Any,
             loose: int = None) -> None:  # type: ignore[assignment]
    """Annotations as parts write them (``loose`` is annotated int but defaults to None)."""


GOOD = {"count": 3, "rate": 2, "name": "x", "flag": True, "sizes": [1, 2], "pair": [1, 2], "knobs": {"a": 1.5},
        "mode": "b", "maybe": None, "spec": {"type": "anything"}, "loose": None}


def test_valid_values_pass_and_each_clear_mismatch_is_named() -> None:
    assert type_mismatches(_factory, GOOD) == []
    bad = {"count": "3", "rate": "fast", "name": 1, "flag": "yes", "sizes": "12", "pair": [1, 2, 3],
           "knobs": {"a": "b"}, "mode": "c", "maybe": 1.5}
    assert [p.split(":")[0] for p in type_mismatches(_factory, bad)] == list(bad)
    assert type_mismatches(_factory, {"count": True}) == ["count: expected int, got bool (True)"]


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.lists(st.integers()),
                 st.dictionaries(st.text(), st.integers())))
def test_any_and_unknown_classes_accept_every_value(value: Any) -> None:
    assert fits(value, Any) is True
    assert fits(value, BuildError) in (True, None)  # a class a spec may stand for: never a clear mismatch


# -- 12: --tile errors name --tile ------------------------------------------------------
def test_a_negative_tile_is_reported_as_a_tile_error(tmp_path, capsys: pytest.CaptureFixture) -> None:
    code = main(["restore", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--weights", str(tmp_path),
                 "--tile", "-5"])
    err = capsys.readouterr().err
    assert code == 2 and "--tile must be >= 0" in err and "--overlap" not in err


# -- 8, 9: plugin isolation holds against sys.exit(); recipe plugins are never imported ---
@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A folder on sys.path for fake distributions; registries re-read metadata."""
    from restorekit.registry import refresh_plugins

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RESTOREKIT_DISABLE_PLUGINS", raising=False)
    refresh_plugins()
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith("rkt_")]:
        del sys.modules[mod]
    monkeypatch.undo()
    refresh_plugins()


def _cli(*args: str, path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{SRC}"}
    env.pop("RESTOREKIT_DISABLE_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "restorekit", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_a_plugin_calling_sys_exit_at_import_is_contained(plugin_path) -> None:
    from restorekit.errors import ComponentLoadError
    from restorekit.registry import registry

    write_dist(plugin_path, "rk-exits", "0.2", {"restorekit.losses": {"quits": "rkt_exits:Loss"}},
               {"rkt_exits.py": "import sys\nsys.exit(3)\n"})
    with pytest.raises(ComponentLoadError, match=r"loss 'quits' from plugin rk-exits==0.2 .*SystemExit: 3"):
        build("loss", "quits")
    assert [e.name for e in registry("loss").check_all()] == ["quits"]
    check = _cli("plugins", "--check", path=plugin_path)
    assert check.returncode == 1 and "FAILED: SystemExit: 3" in check.stdout, check.stderr


def test_recipe_plugins_are_listed_without_import_and_a_missing_package_is_reported(plugin_path) -> None:
    from restorekit.recipe_plugins import recipe_plugins
    from restorekit.recipes import find_recipe, list_recipes

    write_dist(plugin_path, "rk-recipes", "1.0", {"restorekit.recipes": {"mine": "rkt_recipes.recipes"}},
               {"rkt_recipes/__init__.py": "raise SystemExit('imported!')\n",
                "rkt_recipes/recipes/__init__.py": "",
                "rkt_recipes/recipes/plugged.yaml": "name: plugged\nmodel: {type: restormer}\n"})
    write_dist(plugin_path, "rk-gone", "0.1", {"restorekit.recipes": {"gone": "rkt_not_installed.recipes"}})
    assert list_recipes()["plugged"] == "rk-recipes==1.0"
    assert find_recipe("plugged") == (plugin_path / "rkt_recipes" / "recipes" / "plugged.yaml").resolve()
    assert "rkt_recipes" not in sys.modules
    broken = [p for p in recipe_plugins() if p.error]
    assert [(p.source, p.error) for p in broken] == [("rk-gone==0.1", "package 'rkt_not_installed' is not installed")]
    with pytest.raises(RecipeError, match="recipe plugins that failed: rk-gone==0.1"):
        find_recipe("nothing_like_it")
    check = _cli("plugins", "--check", path=plugin_path)
    assert check.returncode == 1 and "rk-gone==0.1" in check.stdout and "is not installed" in check.stdout
    listed = _cli("list", "recipes", path=plugin_path)
    assert listed.returncode == 0 and "plugged" in listed.stdout and "imported!" not in listed.stderr
