"""The engine's numbers against values computed apart: one clipped optimizer step by hand,
the EMA's warm-up decay inside update(), schedule values in mid-course.

Each expected value here is written out (a hand computation on a fixed input, or the
formula in plain python), never taken from the engine or from a second engine run.
"""

from __future__ import annotations

import math
from pathlib import Path

import engine_fakes
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_engine_train import recipe

from restorekit.engine import checkpoint as ckpt
from restorekit.engine.ema import EMA
from restorekit.engine.schedule import WarmupCosine, constant, multistep
from restorekit.engine.train import Trainer

engine_fakes.register()


# -- one optimizer step: clipping and accumulation --------------------------------------------
def hand_sgd_step(initial: dict[str, torch.Tensor], lr: float, max_norm: float | None) -> dict[str, torch.Tensor]:
    """``p - lr * g * min(1, max_norm / (|g| + 1e-6))`` on the fake stream's first batch, L1 loss."""
    model = engine_fakes.LocalConvNet()
    model.load_state_dict(initial)
    batch = next(engine_fakes.FakeStream(4).batches(0))
    loss = (model(batch["lq"]) - batch["gt"]).abs().mean()
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(loss, [p for _, p in model.named_parameters()])
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    scale = 1.0 if max_norm is None else min(1.0, max_norm / (norm + 1e-6))
    if max_norm is not None:
        assert norm > 3 * max_norm  # the clip is active, and by a wide margin
    return {n: initial[n] - lr * scale * g for n, g in zip(names, grads)}


@pytest.mark.parametrize(("grad_clip", "accumulate"), [(0.02, 1), (0.02, 2), (None, 1)])
def test_one_training_step_equals_a_hand_clipped_sgd_step(tmp_path: Path, grad_clip, accumulate) -> None:
    rec = recipe(
        tmp_path / "run",
        iterations=1,
        ckpt_every=1,
        lr=0.05,
        optimizer={"type": "sgd", "momentum": 0.0},
        schedule={"type": "constant"},
        grad_clip=grad_clip,
        accumulate=accumulate,
        ema_decay=None,
    )
    trainer = Trainer(rec, stream=engine_fakes.FakeStream(4))
    initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    expected = hand_sgd_step(initial, 0.05, grad_clip)
    _, path = ckpt.list_checkpoints(tmp_path / "run")[-1]
    weights = load_file(str(path / "model.safetensors"))
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-7)


# -- EMA ------------------------------------------------------------------------------------------
def test_ema_update_uses_the_warm_up_decay() -> None:
    """Decays 1/10, 2/11, 3/12 for the first three updates (warm-up on, decay 0.999)."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.999, warmup=True)
    shadow = 0.0
    for n, value in enumerate([1.0, 2.0, 4.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        decay = (1 + n) / (10 + n)
        shadow = decay * shadow + (1 - decay) * value
        assert ema.shadow["weight"].item() == pytest.approx(shadow, rel=1e-6)
    # written out: after 1 -> 0.9; after 2 -> 2/11 * 0.9 + 9/11 * 2; after 4 -> 3/12 * that + 9/12 * 4
    assert ema.shadow["weight"].item() == pytest.approx(3 / 12 * (2 / 11 * 0.9 + 9 / 11 * 2) + 9 / 12 * 4, rel=1e-6)


# -- schedules ------------------------------------------------------------------------------------
def test_warmup_cosine_mid_course_values_by_hand() -> None:
    """lr = min + (base - min) * (1 + cos(pi * progress)) / 2 between the peak and the last step."""
    no_warmup = WarmupCosine(1e-3, 1e-4, 0, 11)  # peak at step 0, min_lr at step 10
    assert no_warmup(5) == pytest.approx(5.5e-4, rel=1e-12)  # progress 1/2: the midpoint of the two rates
    assert no_warmup(4) == pytest.approx(1e-4 + 4.5e-4 * (1 + 0.30901699437494745), rel=1e-12)  # cos(0.4 pi)
    assert no_warmup(8) == pytest.approx(1e-4 + 4.5e-4 * (1 - 0.8090169943749475), rel=1e-12)  # cos(0.8 pi)
    warm = WarmupCosine(2e-3, 5e-4, 3, 13)  # warmup steps 0, 1, 2 (the peak), min_lr at 12
    assert [warm(s) for s in range(3)] == pytest.approx([2e-3 / 3, 4e-3 / 3, 2e-3], rel=1e-12)
    assert warm(7) == pytest.approx(1.25e-3, rel=1e-12)  # progress (7 - 2) / 10 = 1/2


def test_constant_and_multistep_values_by_hand() -> None:
    assert [constant(1e-3, 10, warmup_iters=4)(s) for s in (0, 1, 2, 3, 9)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3], rel=1e-12
    )
    steps = multistep(1e-3, 100, milestones=[10, 30], gamma=0.1, warmup_iters=2)
    assert [steps(s) for s in (0, 1, 9, 10, 29, 30, 99)] == pytest.approx(
        [5e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rel=1e-12
    )


# -- evaluation -------------------------------------------------------------------------------------
class Dimmer(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.9 * x + 0.05


def test_evaluation_scores_are_per_image_psnr_averaged_per_task_then_over_tasks() -> None:
    """A task's PSNR is the mean over its images of 10 log10(1 / mse) (borders cropped, centre crop to
    a multiple of 8); the mean row averages the tasks (not the images)."""
    from restorekit.engine.config import EvalConfig
    from restorekit.engine.evaluate import evaluate

    sets = {"a": engine_fakes.FakeEvalSet(2, 21, seed=3), "b": engine_fakes.FakeEvalSet(1, 26, seed=4)}
    cfg = EvalConfig(crop_multiple=8, crop_border=2, metrics=["psnr"])
    result = evaluate(Dimmer(), sets, cfg, torch.device("cpu"))

    def psnr(x: np.ndarray, y: np.ndarray) -> float:
        return 10 * math.log10(1.0 / float(((x[:, 2:-2, 2:-2] - y[:, 2:-2, 2:-2]) ** 2).mean()))

    want = {}
    for task, data in sets.items():
        scores_in, scores = [], []
        for item in data.items:
            side = item["gt"].shape[-1] // 8 * 8  # 21 -> 16, 26 -> 24
            top = (item["gt"].shape[-1] - side) // 2
            lq = item["lq"][:, top : top + side, top : top + side].double().numpy()
            gt = item["gt"][:, top : top + side, top : top + side].double().numpy()
            scores_in.append(psnr(lq, gt))
            scores.append(psnr(np.clip(0.9 * lq + 0.05, 0, 1), gt))
        want[task] = (sum(scores_in) / len(scores_in), sum(scores) / len(scores))
        assert result["tasks"][task]["images"] == len(data)
        assert result["tasks"][task]["psnr_in"] == pytest.approx(want[task][0], abs=1e-4)
        assert result["tasks"][task]["psnr"] == pytest.approx(want[task][1], abs=1e-4)
    assert result["mean"]["psnr"] == pytest.approx((want["a"][1] + want["b"][1]) / 2, abs=1e-4)
