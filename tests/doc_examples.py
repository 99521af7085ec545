"""The examples of README.md and docs/*.md, collected and run on tiny settings (tests/test_docs_examples.py).

Collected: every fenced ``python``, ``console`` and ``bash`` block. A block marked just above its
fence with ``<!-- example: skip reason="..." -->`` is listed, not run; the reason is required.

How a block runs (docs/testing.md documents the rules):

* Python blocks run in one subprocess (``python tests/doc_examples.py``), each with its own
  globals, in a temporary working folder holding the shared fixtures (:func:`make_fixtures`),
  after the textual substitutions of :data:`PYTHON_TINY` (full-size models become the CPU demo's
  tiny one). A few names stand for what the text around a block defines: :data:`GIVEN`.
* Console commands (``$ ...``, continued lines joined): a ``restorekit`` command is parsed by the
  real CLI parser; its recipe is loaded with its ``-o`` overrides and validated by
  ``restorekit.validate`` (every section, the model and loss built on the meta device; the data
  folders are not looked for). The first command of
  each form (subcommand and the set of its options) in :data:`RUN_FOR_REAL` runs for real, and the
  output lines the block shows after it (those without "...") must appear in what it printed.
  ``python SCRIPT ARGS`` is parsed by the script's own ``parse_args``; ``bash X.sh`` is checked by
  ``bash -n``; ``pip install`` names a folder of the repository or an extra of pyproject.toml;
  ``python -m pytest FILE`` names a test file; :data:`EXTERNAL` programs are not ours to check.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
LANGUAGES = ("python", "console", "bash")
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r'^<!-- example: skip reason="([^"]*)" -->$')

PYTHON_TINY: tuple[tuple[str, str], ...] = (
    (r'build_model\("dino_ir"', 'build_model("demo/dino_ir_tiny"'),  # the same model type, tiny
    (r'load_recipe\("dino_ir"', 'load_recipe("demo/dino_ir_tiny"'),
    (r'"train\.iterations=50"', '"train.iterations=2", "train.progress=false", "eval.max_images=1", "eval.grid=false"'),
    (r'"/data/weights/dinov2_vitb14_pretrain\.pth"', '"dinov2_vitb14_pretrain.pth"'),  # the fixture file
)
"""Substitutions in Python blocks: (regular expression, replacement)."""

GIVEN = """
import torch
from torch import nn
import restorekit
from restorekit import build_model, load_recipe
torch.manual_seed(0)
lq = torch.rand(1, 3, 40, 56)
recipe = load_recipe("demo/dino_ir_tiny")
model = build_model("demo/dino_ir_tiny").eval()
"""
"""What a Python block may use without defining it (the prose around it defines it)."""

ARGV_TINY = {"runs/dino_ir-.../": "runs/dino_ir-20250101-120000", "/data/my_pairs": "my_pairs"}
"""Console arguments that stand for the fixtures: a run folder's time stamp, your own pairs."""

RUN_FOR_REAL = {"list", "show", "diff", "plugins", "restore", "init", "data prepare --list", "data check my"}
"""Command forms cheap enough to run at tiny size; every other ``restorekit`` command is parsed
and validated (training, evaluation, export, downloads and the Hub take minutes to hours or need
data, weights or the network)."""

EXTERNAL = {"tensorboard", "huggingface-cli"}
RUN_NAME = "runs/dino_ir-20250101-120000"
BLOCK_SECONDS = 60  # one block; the whole run aims at under a minute


@dataclass
class Block:
    page: str
    line: int
    language: str
    text: str
    skip: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def collect() -> list[Block]:
    blocks = []
    for page in PAGES:
        lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            fence = FENCE.match(lines[i])
            if not fence:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if fence.group(1) in LANGUAGES:
                above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
                marker = SKIP.match(above.strip())
                skip = marker.group(1) if marker else ("" if "example: skip" in above else None)
                blocks.append(Block(page, i + 1, fence.group(1), "\n".join(lines[i + 1 : end]), skip))
            i = end + 1
    return blocks


# -- console blocks ------------------------------------------------------------------------


def commands(block: Block) -> list[tuple[list[str], list[str], bool]]:
    """Each command of a console block: (argv, the output lines shown after it, whether ARGV_TINY changed it)."""
    lines = block.text.splitlines()
    if block.language == "bash":
        lines = ["$ " + line for line in lines if line.strip()]
    out: list[tuple[list[str], list[str], bool]] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if out:
                out[-1][1].append(lines[i])
            i += 1
            continue
        command = lines[i][2:]
        while command.rstrip().endswith("\\"):
            i += 1
            command = command.rstrip()[:-1] + " " + lines[i].strip()
        argv = shlex.split(command, comments=True)
        while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # CI=1, OUT=/tmp/check
            argv.pop(0)
        out.append(([ARGV_TINY.get(a, a) for a in argv], [], any(a in ARGV_TINY for a in argv)))
        i += 1
    return out


def form(argv: list[str]) -> str:
    """``restorekit`` ARGS -> its subcommand (with a data action) and the set of its options."""
    words = [a for a in argv[1:] if not a.startswith("-")]
    name = " ".join(words[:2]) if words and words[0] == "data" else words[0] if words else ""
    options = sorted({a.split("=")[0] for a in argv[1:] if a.startswith("--")})
    return f"{name} {' '.join(options)}".strip()


def real_form(argv: list[str]) -> str | None:
    """The RUN_FOR_REAL entry this command belongs to, if any."""
    key = form(argv)
    if key.startswith("data check"):
        return "data check my" if any(a.endswith("mine.yaml") for a in argv) else None
    if key.startswith("data prepare"):
        return "data prepare --list" if "--list" in argv else None
    name = key.split()[0] if key else ""
    return name if name in RUN_FOR_REAL else None


def validate_recipe_args(args: Any) -> None:
    """Load the recipe with its overrides and validate it all (restorekit.validate), its data folders aside."""
    from restorekit import validate
    from restorekit.recipes import load_recipe

    recipe_name = getattr(args, "recipe", None)
    if not recipe_name:
        return
    recipe = load_recipe(recipe_name, getattr(args, "override", None) or [])
    recipe["model"] = without_missing_weights(recipe.get("model"))
    validate(recipe, recipe_name, data=())  # the model and loss are built on the meta device


def without_missing_weights(spec: Any) -> Any:
    """A weights file an example names is the reader's (motion_deblurring.pth): absent here, random init."""
    if isinstance(spec, dict):
        return {
            k: None if k == "weights" and isinstance(v, str) and not Path(v).exists() else without_missing_weights(v)
            for k, v in spec.items()
        }
    return spec


def check_restorekit(argv: list[str], shown: list[str], done: set[str], substituted: bool = False) -> str:
    from restorekit.cli import command_of, main, make_parser

    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            args = make_parser(command_of(argv[1:])).parse_args(argv[1:])
        except SystemExit:
            return f"the CLI parser refuses it: {err.getvalue().strip()}"
    key = real_form(argv)
    reads = [getattr(args, name, None) for name in ("input", "weights", "pairs")]
    if key is None or form(argv) in done or not all(Path(r).exists() for r in reads if r):
        validate_recipe_args(args)
        return "parsed and validated"
    done.add(form(argv))
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv[1:])
    printed = " ".join((out.getvalue() + err.getvalue()).split())
    if code != 0:
        return f"exit status {code}: {printed[-2000:]}"
    if substituted:  # the output shown is for the doc's own arguments
        shown = []
    missing = [line for line in shown if line.strip() and "..." not in line and " ".join(line.split()) not in printed]
    if missing:
        return f"shown output not printed: {missing}"
    return "ran"


def check_script(argv: list[str]) -> str:
    script = ROOT / argv[1]
    if not script.is_file():
        return f"{argv[1]} is not a file of the repository"
    import importlib.util

    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(f"_doc_example_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "parse_args"):
        return "script exists"
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            module.parse_args(argv[2:])
        except SystemExit:
            return f"{argv[1]} refuses its arguments: {err.getvalue().strip()}"
    return "parsed"


def check_command(argv: list[str], shown: list[str], substituted: bool, *, done: set[str]) -> str:
    program = Path(argv[0]).name
    if program == "restorekit":
        return check_restorekit(argv, shown, done, substituted)
    if program == "torchrun":
        return check_restorekit(["restorekit"] + argv[argv.index("restorekit") + 1 :], [], done | {"*"})
    if program == "bash" or argv[0].endswith(".sh"):
        script = ROOT / (argv[1] if program == "bash" else argv[0])
        status = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        return "bash -n" if script.is_file() and status.returncode == 0 else f"{script}: {status.stderr}"
    if program == "pip":
        return check_pip(argv[-1])
    if program.startswith("python") and argv[1:3] == ["-m", "pytest"]:
        files = [a for a in argv[3:] if a.endswith(".py")]
        return "test files exist" if all((ROOT / f).is_file() for f in files) else f"missing test file in {files}"
    if program.startswith("python"):
        return check_script(argv)
    if program in EXTERNAL:
        return "external program"
    return f"unknown program {argv[0]!r}: add a rule to tests/doc_examples.py or mark the block"


def check_pip(target: str) -> str:
    """A wheel of this version, or restorekit / a folder of the repository with extras pyproject.toml defines."""
    from restorekit import __version__

    if target.endswith(".whl"):
        ok = target.startswith(f"restorekit-{__version__}-")
        return "wheel of this version" if ok else f"{target} is not restorekit {__version__}'s wheel"
    match = re.fullmatch(r"([^\[]+)(?:\[([\w,]+)\])?", target)
    where, extras = match.group(1), (match.group(2) or "").split(",")
    defined = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    unknown = [e for e in extras if e and e not in defined]
    if unknown:
        return f"no extra {unknown} in pyproject.toml"
    return "folder exists" if where == "restorekit" or (ROOT / where).is_dir() else f"{where} is not in the repository"


# -- python blocks and the run -------------------------------------------------------------


def tiny_python(text: str) -> str:
    for pattern, replacement in PYTHON_TINY:
        text = re.sub(pattern, replacement, text)
    return text


def make_fixtures(work: Path) -> None:
    """The shared tiny fixtures: a trained run, DINOv2 weights of the tiny backbone, a photo, pairs."""
    import numpy as np
    import torch
    from PIL import Image

    from restorekit import build_model, load_recipe
    from restorekit.engine.train import train

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(work / "photo.png")
    for side in ("lq", "gt"):
        (work / "my_pairs" / side).mkdir(parents=True)
    for i in range(10):
        gt = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(gt).save(work / "my_pairs" / "gt" / f"{i:02d}.png")
        Image.fromarray(np.clip(gt + rng.integers(-20, 20, gt.shape), 0, 255).astype(np.uint8)).save(
            work / "my_pairs" / "lq" / f"{i:02d}.png"
        )
    torch.manual_seed(0)
    backbone = build_model("demo/dino_ir_tiny").backbone
    torch.save(backbone.model.state_dict(), work / "dinov2_vitb14_pretrain.pth")
    overrides = ["train.iterations=2", "train.ckpt_every=2", f"train.out_dir={RUN_NAME}", "train.progress=false",
                 "eval.after_train=false", "train.log_every=1"]  # fmt: skip
    train(load_recipe("demo/dino_ir_tiny", overrides))


def run_python(block: Block) -> str:
    namespace: dict[str, Any] = {"__name__": f"doc_example_{block.page}_{block.line}"}
    exec(compile(GIVEN, "<given>", "exec"), namespace)  # noqa: S102 - the repository's own docs
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(tiny_python(block.text), block.id, "exec"), namespace)  # noqa: S102
    return "ran"


def run_all(blocks: list[Block], work: Path) -> dict[str, str]:
    """Every block, in page order, in ``work``: 'ok: ...' or 'failed: ...' per block id."""
    import warnings

    os.chdir(work)
    warnings.filterwarnings("ignore")
    make_fixtures(work)
    results, done = {}, set()
    signal.signal(signal.SIGALRM, _too_long)
    for block in blocks:
        if block.skip is not None:
            continue
        started = time.perf_counter()
        signal.alarm(BLOCK_SECONDS)
        try:
            if block.language == "python":
                outcome = run_python(block)
                failures = []
            else:
                outcomes = [check_command(*command, done=done) for command in commands(block)]
                failures = [o for o in outcomes if not o.startswith(("ran", "pars", "bash", "wheel", "folder",
                                                                    "test files", "script", "external"))]  # fmt: skip
                outcome = "; ".join(outcomes)
            results[block.id] = f"failed: {failures}" if failures else f"ok: {outcome}"
        except Exception:  # noqa: BLE001 - reported per block
            results[block.id] = "failed: " + traceback.format_exc(limit=-4)
        finally:
            signal.alarm(0)
        print(f"{block.id}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return results


class BlockTooLong(Exception):
    pass


def _too_long(signum: int, frame: Any) -> None:
    raise BlockTooLong(f"over {BLOCK_SECONDS} s: make it tinier or mark it")


if __name__ == "__main__":
    work, report = Path(sys.argv[1]), Path(sys.argv[2])
    import torch

    torch.set_num_threads(1)
    report.write_text(json.dumps(run_all(collect(), work), indent=1))
