"""Every example of README.md and docs/*.md runs (or, for a long or remote one, parses and validates
against the real CLI and recipes); blocks marked as skipped say why. How: tests/doc_examples.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from doc_examples import ROOT, Block, collect, commands, form, real_form, tiny_python

BLOCKS = collect()
RUN = [b for b in BLOCKS if b.skip is None]


def test_the_docs_have_examples_and_every_skipped_one_says_why() -> None:
    assert len(RUN) >= 30 and {b.language for b in RUN} == {"python", "console", "bash"}
    skipped = [b for b in BLOCKS if b.skip is not None]
    for block in skipped:
        assert len(block.skip) >= 10, f'{block.id}: a skipped example needs reason="why" (got {block.skip!r})'
    print("\n".join(f"skipped {b.id}: {b.skip}" for b in skipped))


def test_collection_reads_markers_commands_and_forms() -> None:
    block = Block("x.md", 1, "console", "$ CI=1 restorekit train dino_ir \\\n   -o a=1 --dry-run  # why\nout 1", None)
    assert commands(block) == [(["restorekit", "train", "dino_ir", "-o", "a=1", "--dry-run"], ["out 1"], False)]
    pairs = Block("x.md", 1, "console", "$ restorekit init mine --pairs /data/my_pairs", None)
    assert commands(pairs) == [(["restorekit", "init", "mine", "--pairs", "my_pairs"], [], True)]
    assert form(["restorekit", "data", "prepare", "--list"]) == "data prepare --list"
    assert real_form(["restorekit", "restore", "a.png", "b.png", "--weights", "w"]) == "restore"
    assert real_form(["restorekit", "train", "dino_ir"]) is None
    assert tiny_python('m = build_model("dino_ir", x=1)\nn = build_model("dino_ir_5task")') == (
        'm = build_model("demo/dino_ir_tiny", x=1)\nn = build_model("dino_ir_5task")'
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """All blocks in one subprocess (one torch import; registrations stay out of this process)."""
    work = tmp_path_factory.mktemp("doc_examples")
    report = work / "report.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RESTOREKIT_DISABLE_PLUGINS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "doc_examples.py"), str(work), str(report)],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_example_runs(results: dict[str, str], block: Block) -> None:
    assert results[block.id].startswith("ok"), f"{block.id} ({block.language}):\n{results[block.id]}"
