"""Export with dynamic height and width: torch.export for restormer, promptir and dino_ir, ONNX (in
onnxruntime, part of the dev extras) for dino_ir, the CLI, and an export that does not match failing.

Tracing is the slow part (seconds per tiny model); each model is traced once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from restorekit import build_model
from restorekit.engine.export import CHECK_SIZES, MAX_SIDE, ExportError, PaddedModel, export_model, trace
from restorekit.tiny import TINY, tiny_model_spec


def tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "dino_ir":  # a 4-block guide: tracing time grows with the blocks
        return build_model(tiny_model_spec({"type": "dino_ir", "layers": [1, 3]})).eval()
    return build_model({"type": name, **TINY["model"][name]}).eval()


def loaded_program_matches(path: Path, model: nn.Module) -> None:
    program = torch.export.load(str(path)).module()
    x = torch.rand(2, 3, 33, 100)  # a third size, a batch of two, sides not multiples of 8
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_dino_ir_exports_to_torch_export_and_onnx_at_any_size(tmp_path: Path) -> None:
    """One trace, both formats; the ViT guide on a symbolic grid is the hard part (engine/export.py)."""
    import onnxruntime

    model = tiny("dino_ir")
    program = trace(PaddedModel(model, 8))
    # windows cannot be traced for every size: one global pass is, so no side is cut short
    assert model.guide_pass.rule == "windowed"  # the model's own rule is back after the trace
    assert sorted(r.upper for r in program.range_constraints.values()).count(MAX_SIDE) == 2
    report = export_model(model, tmp_path / "dino_ir.pt2", "torch_export", program=program)
    assert set(report.differences) == set(CHECK_SIZES) and max(report.differences.values()) <= 1e-5
    loaded_program_matches(tmp_path / "dino_ir.pt2", model)
    report = export_model(model, tmp_path / "dino_ir.onnx", "onnx", program=program)
    assert max(report.differences.values()) <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "dino_ir.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 40, 57)
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_promptir_exports_with_dynamic_sizes(tmp_path: Path) -> None:
    model = tiny("promptir")
    report = export_model(model, tmp_path / "promptir.pt2", "torch_export")
    assert max(report.differences.values()) <= 1e-5
    loaded_program_matches(tmp_path / "promptir.pt2", model)


@pytest.mark.slow
def test_export_command_with_released_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from restorekit.cli import main

    model = tiny("restormer")
    torch.save({"params": model.state_dict()}, tmp_path / "restormer.pth")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({"name": "tiny/restormer", "model": {"type": "restormer", **TINY["model"]["restormer"]}})
    )
    args = [
        "export",
        str(recipe),
        "--weights",
        str(tmp_path / "restormer.pth"),
        "--format",
        "torch_export",
        "--output",
        str(tmp_path / "out.pt2"),
    ]
    assert main(args) == 0
    assert "dynamic height and width" in capsys.readouterr().out
    assert main(args) == 2  # the output exists: refused without --overwrite
    loaded_program_matches(tmp_path / "out.pt2", model)


class ExportsDifferently(nn.Module):
    """Adds 1 while being exported: the check after writing must catch it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0 if torch.compiler.is_exporting() else x


def test_an_export_that_differs_from_eager_fails(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"differs from the eager one by 1 .* > tolerance 0.0001"):
        export_model(ExportsDifferently(), tmp_path / "bad.pt2", "torch_export")
    with pytest.raises(ExportError, match="--format must be one of onnx, torch_export"):
        export_model(ExportsDifferently(), tmp_path / "bad.bin", "tflite")


@pytest.mark.parametrize(
    "output, problem",
    [
        ("missing/out.pt2", "the folder {tmp}/missing does not exist"),
        ("file.txt/out.pt2", "{tmp}/file.txt is a file, not a folder"),
        ("folder", "is a folder; give a file name"),
        ("ro/out.pt2", "cannot write into {tmp}/ro: Read-only file system"),
    ],
)
def test_export_refuses_an_output_it_cannot_write_before_tracing(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, output: str, problem: str
) -> None:
    """--weights names nothing: any check made after loading would fail on it instead."""
    import errno
    import os

    from restorekit.cli import main

    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "ro").mkdir()
    real_open = os.open

    def read_only(path, *args, **kwargs):  # tests run as root, whom a chmod would not stop
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    target = tmp_path / output
    args = ["export", "demo/restormer_tiny", "--weights", str(tmp_path / "none"), "--format", "torch_export"]
    assert main([*args, "--output", str(target)]) == 2
    assert f"error: --output {target}: {problem.format(tmp=tmp_path)}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "folder", "ro"]


@pytest.mark.parametrize("tolerance", ["-1", "nan"])
def test_export_refuses_a_negative_tolerance_before_tracing(
    tmp_path: Path, capsys: pytest.CaptureFixture, tolerance: str
) -> None:
    from restorekit.cli import main

    args = ["export", "demo/restormer_tiny", "--weights", str(tmp_path / "none"), "--format", "torch_export"]
    assert main([*args, "--output", str(tmp_path / "out.pt2"), "--tolerance", tolerance]) == 2
    assert (
        f"error: --tolerance must be a number >= 0 (the largest max-absolute difference allowed), got {tolerance}"
        in (capsys.readouterr().err)
    )
    assert list(tmp_path.iterdir()) == []
