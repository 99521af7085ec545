"""Plugins through entry points: found from metadata, loaded on demand, failures contained."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from plugin_dists import write_dist

from restorekit.building import build
from restorekit.errors import AmbiguousPartError, PartLoadError, UnknownPartError
from restorekit.listing import list_parts
from restorekit.registry import registry

REPO = Path(__file__).resolve().parents[1]

GOOD = textwrap.dedent(
    """
    import torch.nn as nn

    class Stamp(nn.Module):
        def __init__(self, in_channels=1, num_layers=1, out_channels=2):
            super().__init__()
            self.out_channels = out_channels
    """
)


def test_good_plugin_listed_without_import_then_built(plugin_path):
    write_dist(
        plugin_path, "rk-good", "1.2.3", {"restorekit.fusions": {"stamp": "rkt_good:Stamp"}}, {"rkt_good.py": GOOD}
    )
    rows = {r.name: r for r in list_parts("fusion")}
    assert rows["stamp"].source == "rk-good==1.2.3" and rows["stamp"].status == "lazy"
    assert "rkt_good" not in sys.modules  # listing imported nothing
    part = build("fusion", {"type": "stamp", "out_channels": 7})
    assert part.out_channels == 7 and "rkt_good" in sys.modules
    assert build("fusion", {"type": "rk-good/stamp"}).out_channels == 2


def test_broken_plugin_never_breaks_listing_or_other_parts(plugin_path):
    write_dist(
        plugin_path,
        "rk-broken",
        "0.1",
        {
            "restorekit.fusions": {
                "crash": "rkt_broken:Thing",
                "noattr": "rkt_fine:Missing",
                "notmodule": "rkt_fine:CONSTANT",
            }
        },
        {"rkt_broken.py": "raise RuntimeError('boom at import')\n", "rkt_fine.py": "CONSTANT = 3\n"},
    )
    write_dist(
        plugin_path, "rk-good", "1.0", {"restorekit.fusions": {"stamp": "rkt_good:Stamp"}}, {"rkt_good.py": GOOD}
    )
    names = {r.name for r in list_parts("fusion")}
    assert {"crash", "noattr", "notmodule", "msf"} <= names
    with pytest.raises(PartLoadError) as err:
        registry("fusion").get("crash")
    msg = str(err.value)
    assert "rk-broken==0.1" in msg and "rkt_broken:Thing" in msg and "boom at import" in msg
    with pytest.raises(PartLoadError, match="AttributeError"):
        registry("fusion").get("noattr")
    with pytest.raises(PartLoadError, match="not callable"):
        registry("fusion").get("notmodule")
    failed = {r.name: r for r in list_parts("fusion") if r.status == "failed"}
    assert "boom at import" in failed["crash"].error
    # Other parts still work, and unknown-name errors mention the failed plugins.
    assert build("fusion", "stamp").out_channels == 2
    with pytest.raises(UnknownPartError, match="plugins that failed to load: .*boom at import"):
        registry("fusion").get("stampp")


def test_wrong_kind_class_is_reported(plugin_path):
    write_dist(
        plugin_path,
        "rk-wrong",
        "2.0",
        {"restorekit.fusions": {"plain": "rkt_wrong:Plain"}},
        {"rkt_wrong.py": "class Plain:\n    pass\n"},
    )
    with pytest.raises(PartLoadError, match="not a torch.nn.Module"):
        registry("fusion").get("plain")


def test_plugin_never_replaces_a_builtin(plugin_path):
    write_dist(
        plugin_path, "rk-shadow", "1.0", {"restorekit.fusions": {"msf": "rkt_shadow:Stamp"}}, {"rkt_shadow.py": GOOD}
    )
    with pytest.warns(UserWarning, match="reachable as 'rk-shadow/msf'"):
        entries = {e.name: e for e in registry("fusion").entries()}
    assert entries["msf"].source == "builtin"
    assert entries["rk-shadow/msf"].shadowed
    assert build("fusion", {"type": "rk-shadow/msf"}).out_channels == 2


def test_two_plugins_claiming_one_name_is_ambiguous(plugin_path):
    for dist in ("rk-one", "rk-two"):
        mod = dist.replace("-", "_").replace("rk_", "rkt_")
        write_dist(plugin_path, dist, "1.0", {"restorekit.fusions": {"same": f"{mod}:Stamp"}}, {f"{mod}.py": GOOD})
    with pytest.raises(AmbiguousPartError) as err:
        registry("fusion").get("same")
    assert "rk-one==1.0" in str(err.value) and "rk-two==1.0" in str(err.value)
    assert "rk-one/same" in str(err.value)
    assert build("fusion", "rk-two/same").out_channels == 2


def test_disable_switch(plugin_path, monkeypatch):
    write_dist(
        plugin_path, "rk-good", "1.0", {"restorekit.fusions": {"stamp": "rkt_good:Stamp"}}, {"rkt_good.py": GOOD}
    )
    write_dist(
        plugin_path, "rk-other", "1.0", {"restorekit.fusions": {"other": "rkt_other:Stamp"}}, {"rkt_other.py": GOOD}
    )
    assert "stamp" in registry("fusion")
    monkeypatch.setenv("RESTOREKIT_DISABLE_PLUGINS", "1")
    assert "stamp" not in registry("fusion") and "other" not in registry("fusion")
    assert "msf" in registry("fusion")
    monkeypatch.setenv("RESTOREKIT_DISABLE_PLUGINS", "rk_good")
    assert "stamp" not in registry("fusion") and "other" in registry("fusion")


def run_cli(*args, env_extra=None, cwd=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "restorekit", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_plugins_command_and_check(plugin_path):
    write_dist(
        plugin_path, "rk-good", "1.0", {"restorekit.fusions": {"stamp": "rkt_good:Stamp"}}, {"rkt_good.py": GOOD}
    )
    write_dist(
        plugin_path,
        "rk-broken",
        "0.1",
        {"restorekit.losses": {"crash": "rkt_broken:X"}},
        {"rkt_broken.py": "raise ImportError('missing dependency foo')\n"},
    )
    env = {"PYTHONPATH": str(plugin_path)}
    listing = run_cli("plugins", env_extra=env)
    assert listing.returncode == 0, listing.stderr
    assert "stamp" in listing.stdout and "rk-broken==0.1" in listing.stdout
    check = run_cli("plugins", "--check", env_extra=env)
    assert check.returncode == 1
    assert "missing dependency foo" in check.stdout and "ok" in check.stdout
    parts = run_cli("list", "fusion", env_extra=env)
    assert "stamp" in parts.stdout and "rk-good==1.0" in parts.stdout


def test_example_plugin_package_installs_and_works(tmp_path):
    """The real packaging path: pip builds and installs examples/restorekit-film."""
    target = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO / "examples" / "restorekit-film"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    env = {"PYTHONPATH": str(target)}
    listing = run_cli("list", "fusion", env_extra=env)
    assert listing.returncode == 0, listing.stderr
    assert "film" in listing.stdout and "restorekit-film==0.1.0" in listing.stdout
    recipes = run_cli("list", "recipes", env_extra=env)
    assert "dino_ir_film" in recipes.stdout and "restorekit-film==0.1.0" in recipes.stdout
    code = textwrap.dedent(
        """
        import torch
        from restorekit import build
        fusion = build("fusion", {"type": "film", "in_channels": 4, "num_layers": 2, "out_channels": 3})
        out = fusion([torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)])
        print(tuple(out.shape))
        """
    )
    import os

    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(2, 3, 5, 6)"


def test_check_loads_shadowed_and_ambiguous_plugins(plugin_path):
    """``check_all`` imports the real plugin entries, not renamed copies of them."""
    write_dist(plugin_path, "rk-shadow", "1.0", {"restorekit.fusions": {"concat": "rkt_nomod:Thing"}})
    for dist in ("rk-one", "rk-two"):
        write_dist(plugin_path, dist, "1.0", {"restorekit.fusions": {"same": "rkt_missing:Stamp"}})
    with pytest.warns(UserWarning):
        bad = {e.dist + "/" + e.name for e in registry("fusion").check_all()}
    assert bad == {"rk-shadow/concat", "rk-one/same", "rk-two/same"}
    failed = {e.dist: e.error for e in registry("fusion").plugin_entries()}
    assert all("No module named" in failed[d] for d in ("rk-shadow", "rk-one", "rk-two"))
    env = {"PYTHONPATH": str(plugin_path)}
    check = run_cli("plugins", "--check", env_extra=env)
    assert check.returncode == 1 and "FAILED" in check.stdout
