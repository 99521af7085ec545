"""The command line's foundation commands, through subprocesses, and the light import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest


def run_cli(*args, cwd=None):
    env = {**os.environ, "RESTOREKIT_DISABLE_PLUGINS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "restorekit", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_import_restorekit_is_light():
    code = textwrap.dedent(
        """
        import json, sys
        import restorekit
        restorekit.list_parts()
        restorekit.load_recipe
        from restorekit import cli
        cli.make_parser()
        heavy = [m for m in ("torch", "timm", "open_clip", "torchvision", "gradio", "playwright", "PIL")
                 if m in sys.modules]
        print(json.dumps(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_list_shows_kinds_and_sources():
    out = run_cli("list")
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines()[1:]]
    assert ["msf", "fusion", "builtin"] in lines and ["dino_ir", "model", "builtin"] in lines
    only = run_cli("list", "body")
    assert {line.split()[1] for line in only.stdout.splitlines()[1:]} == {"body"}


def test_unknown_kind_is_a_clear_cli_error():
    out = run_cli("list", "fusions")
    assert out.returncode == 2
    assert "did you mean 'fusion'" in out.stderr and "Traceback" not in out.stderr


def test_show_and_diff(tmp_path):
    (tmp_path / "a.yaml").write_text("model: {type: dino_ir, fusion: {type: msf, experts: 4}}\ntrain: {lr: 2e-4}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nmodel: {fusion: {type: concat}}\n")
    shown = run_cli("show", str(tmp_path / "b.yaml"), "-o", "train.lr=1e-3")
    assert shown.returncode == 0, shown.stderr
    assert "type: concat" in shown.stdout and "lr: 0.001" in shown.stdout and "experts" not in shown.stdout
    diff = run_cli("diff", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == [
        "model.fusion.experts: 4 -> (absent)",
        "model.fusion.type: 'msf' -> 'concat'",
    ]


def test_bad_recipe_errors_name_the_file_and_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("train:\n  lr: 1\n  lr: 2\n")
    out = run_cli("show", str(tmp_path / "bad.yaml"))
    assert out.returncode == 2
    assert "bad.yaml:3: duplicate key 'lr'" in out.stderr


@pytest.mark.parametrize("entry", [["-m", "restorekit"], None])
def test_console_script_and_module_agree(entry):
    if entry is None:
        exe = os.path.join(os.path.dirname(sys.executable), "restorekit")
        cmd = [exe, "--version"]
    else:
        cmd = [sys.executable, *entry, "--version"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("restorekit 0.")


@pytest.mark.parametrize("size", ["-5", "-1"])
def test_probe_rejects_a_negative_size(size, capsys):
    from restorekit.cli import main

    assert main(["probe", "--size", size, "--images", "astronaut", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--size must be >= 1 (or 0 for the native size)" in err and "Traceback" not in err


def test_diff_sees_bool_vs_int_and_int_vs_float(tmp_path, capsys):
    from restorekit.cli import main

    (tmp_path / "a.yaml").write_text("train: {ema: true, batch_size: 64}\n")
    (tmp_path / "b.yaml").write_text("train: {ema: 1, batch_size: 64.0}\n")
    assert main(["diff", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "train.batch_size: 64 -> 64.0",
        "train.ema: True -> 1",
    ]
