"""MSF's gate weights per task (restorekit gates): each image's gate against the formula computed apart."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from restorekit.cli import main
from restorekit.engine.config import EvalConfig
from restorekit.engine.gates import gate_weights, gates_markdown, mean_gates, write_gate_report
from restorekit.errors import BuildError
from tests.tiny_dino_ir import tiny_dino_ir

pytestmark = pytest.mark.filterwarnings("ignore:dino_ir. the .* backbone is randomly initialised")


def _items(task: str, count: int, size: tuple[int, int], seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {"lq": torch.rand(3, *size, generator=gen), "gt": torch.rand(3, *size, generator=gen), "task": task,
         "name": f"{task}{i}"}
        for i in range(count)
    ]  # fmt: skip


def _numpy_gate(model, lq: torch.Tensor) -> np.ndarray:
    """softmax(W2 gelu(W1 mean_hw(concat(layers)) + b1) + b2) / tau), evaluated in NumPy."""
    with torch.no_grad():
        guide_in = model.guide_pass.prepare(lq)
        feats = model.guide_pass.features(model.backbone, guide_in, sorted(model.layers))
    x = np.concatenate([feats[layer].double().numpy() for layer in model.layers], axis=1).mean(axis=(2, 3))[0]
    w1, b1 = (p.detach().double().numpy() for p in (model.fusion.gate[0].weight, model.fusion.gate[0].bias))
    w2, b2 = (p.detach().double().numpy() for p in (model.fusion.gate[2].weight, model.fusion.gate[2].bias))
    hidden = w1 @ x + b1
    hidden = 0.5 * hidden * (1 + np.vectorize(math.erf)(hidden / math.sqrt(2)))
    logits = (w2 @ hidden + b2) / math.exp(model.fusion.log_temperature.item())
    e = np.exp(logits - logits.max())
    return e / e.sum()


def test_gate_per_image_and_mean_per_task_match_the_formula() -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir(fusion={"num_experts": 3}).eval()
    with torch.no_grad():  # a gate far from uniform, so the test can tell images apart
        model.fusion.gate[2].weight.mul_(40)
        model.fusion.log_temperature.fill_(-0.5)
    sets = {"noise": _items("noise", 2, (40, 36), 1), "rain": _items("rain", 3, (33, 48), 2)}
    cfg = EvalConfig(crop_multiple=16)
    weights = gate_weights(model, sets, cfg)
    assert [name for name, _ in weights["rain"]] == ["rain0", "rain1", "rain2"]
    for task, rows in weights.items():
        for (_, gate), item in zip(rows, sets[task]):
            h, w = item["lq"].shape[1:]
            top, left = (h - h // 16 * 16) // 2, (w - w // 16 * 16) // 2  # the centre crop to a multiple of 16
            lq = item["lq"][None, :, top : top + h // 16 * 16, left : left + w // 16 * 16]
            np.testing.assert_allclose(gate, _numpy_gate(model, lq), rtol=1e-4, atol=1e-6)
    means = mean_gates(weights)
    np.testing.assert_allclose(means["noise"], (weights["noise"][0][1] + weights["noise"][1][1]) / 2)
    assert not np.allclose(means["noise"], 1 / 3, atol=1e-3)  # the test's gate is not uniform
    text = gates_markdown(weights)
    assert "| rain | 3 | " + " | ".join(f"{v:.3f}" for v in means["rain"]) + " |" in text


def test_a_fusion_without_gate_is_a_clear_error(tmp_path) -> None:
    model = tiny_dino_ir(fusion={"type": "concat"}).eval()
    with pytest.raises(BuildError, match="no gate"):
        gate_weights(model, {"noise": _items("noise", 1, (32, 32), 0)}, EvalConfig())


def test_report_files(tmp_path) -> None:
    weights = {"a": [("x", np.array([0.25, 0.75]))], "b": [("y", np.array([1.0, 0.0])), ("z", np.array([0.5, 0.5]))]}
    csv_path, md_path, png_path = write_gate_report(tmp_path, weights, "note")
    rows = list(csv.DictReader(csv_path.open()))
    assert [(r["task"], r["image"], r["expert_1"]) for r in rows] == [("a", "x", "0.750000"), ("b", "y", "0.000000"),
                                                                       ("b", "z", "0.500000")]  # fmt: skip
    assert "| b | 2 | 0.750 | 0.250 |" in md_path.read_text()
    assert png_path.read_bytes()[:4] == b"\x89PNG"


def test_cli_gates_on_the_demo_recipe(tmp_path, capsys) -> None:
    small = ["-o", "model.body.dim=8", "-o", "model.body.heads=[1,1,2,2]", "-o", "model.fusion_channels=16",
             "-o", "model.backbone.model_kwargs.embed_dim=32", "-o", "model.adapter.head_channels=8"]  # fmt: skip
    for task in ("noise_75", "rain_dense", "haze_thick"):
        small += ["-o", f"eval.suites.unseen.{task}.dataset.max_size=48"]
    from safetensors.torch import save_file

    from restorekit import build_model, load_recipe
    from restorekit.frozen import trainable_state_dict

    overrides = [small[i + 1] for i in range(0, len(small), 2)]
    torch.manual_seed(0)
    model = build_model(load_recipe("demo/dino_ir_tiny", overrides)["model"])
    save_file({k: v.contiguous() for k, v in trainable_state_dict(model).items()}, str(tmp_path / "w.safetensors"))
    argv = ["gates", "demo/dino_ir_tiny", *small, "--suite", "unseen", "--max-images", "2", "--device", "cpu",
            "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "suite unseen" in out and "| noise_75 | 2 |" in out
    rows = list(csv.DictReader((tmp_path / "out" / "gates.csv").open()))
    assert {r["task"] for r in rows} == {"noise_75", "rain_dense", "haze_thick"} and len(rows) == 6
    assert all(math.isclose(sum(float(r[f"expert_{i}"]) for i in range(4)), 1.0, abs_tol=1e-5) for r in rows)
    assert main(argv) != 0  # the files exist: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
