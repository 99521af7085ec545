"""DPC loss: formula, zero at the target, gradient direction, sharing the model's backbone."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_dino_ir import tiny_dino_ir

from restorekit import build
from restorekit.errors import BuildError
from restorekit.losses.dpc import DPCLoss, feature_distance
from restorekit.tiny import tiny_backbone_spec

TINY_BACKBONE = tiny_backbone_spec({"type": "dinov2", "size": "s"}, depth=4)


@pytest.fixture(scope="module")
def standalone() -> DPCLoss:
    torch.manual_seed(0)
    return DPCLoss(layers=[1, 3], backbone=TINY_BACKBONE)


def _images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(2, 3, 40, 40, generator=gen)
    degraded = (clean + 0.4 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    return clean, degraded


def test_dpc_matches_its_formula(standalone) -> None:
    clean, degraded = _images()
    restored = (clean + degraded) / 2
    value = standalone(restored, clean, lq=degraded)
    bb, grid = standalone.own_backbone, (5, 5)
    phi = {name: bb(x, [1, 3], grid) for name, x in [("r", restored), ("g", clean), ("d", degraded)]}
    expected = 0
    for layer in (1, 3):
        pos = (phi["r"][layer] - phi["g"][layer]).abs().flatten(1).mean(1)
        neg = (phi["r"][layer] - phi["d"][layer]).abs().flatten(1).mean(1)
        expected = expected + 0.5 * pos / (neg + 1e-6)
    assert torch.allclose(value, expected.mean(), rtol=1e-5)
    assert phi["r"][1].shape[-2:] == grid  # the stride-8 grid of a 40x40 input


def _cosine_distance_by_loops(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per image, the mean over tokens (h, w) of 1 - cos between the two C-vectors of a token."""
    out = []
    for image_a, image_b in zip(a.tolist(), b.tolist()):  # (C, h, w) nested lists
        channels, height, width = len(image_a), len(image_a[0]), len(image_a[0][0])
        total = 0.0
        for i in range(height):
            for j in range(width):
                u = [image_a[c][i][j] for c in range(channels)]
                v = [image_b[c][i][j] for c in range(channels)]
                dot = sum(x * y for x, y in zip(u, v))
                total += 1.0 - dot / max(math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)), 1e-8)
        out.append(total / (height * width))
    return out


def test_cosine_distance_is_per_token_over_channels_by_hand() -> None:
    a = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # (1, C=2, h=1, w=2): tokens (1, 0) and (0, 2)
    b = torch.tensor([[[[1.0, 1.0]], [[1.0, 0.0]]]])  # tokens (1, 1) and (1, 0)
    # token 1: 1 - 1/sqrt(2); token 2: orthogonal, 1 - 0; mean over the two tokens
    assert feature_distance(a, b, "cosine").tolist() == pytest.approx([(2 - 1 / math.sqrt(2)) / 2], rel=1e-6)
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(2, 5, 3, 4, generator=gen), torch.randn(2, 5, 3, 4, generator=gen)
    assert feature_distance(a, b, "cosine").tolist() == pytest.approx(_cosine_distance_by_loops(a, b), rel=1e-5)
    assert feature_distance(a, b, "l1").tolist() == pytest.approx(
        [sum(abs(x - y) for x, y in zip(u.flatten().tolist(), v.flatten().tolist())) / 60 for u, v in zip(a, b)],
        rel=1e-5,
    )


def test_dpc_cosine_matches_its_formula(standalone) -> None:
    clean, degraded = _images(4)
    restored = (0.6 * clean + 0.4 * degraded).requires_grad_(True)
    loss = DPCLoss(layers=[1, 3], weights=[0.3, 0.7], distance="cosine", backbone=standalone.own_backbone)
    value = loss(restored, clean, lq=degraded)
    bb = standalone.own_backbone
    with torch.no_grad():
        phi = {name: bb(x, [1, 3], (5, 5)) for name, x in [("r", restored), ("g", clean), ("d", degraded)]}
    per_image = [0.0, 0.0]
    for layer, weight in ((1, 0.3), (3, 0.7)):
        pos = _cosine_distance_by_loops(phi["r"][layer], phi["g"][layer])
        neg = _cosine_distance_by_loops(phi["r"][layer], phi["d"][layer])
        per_image = [t + weight * p / (n + 1e-6) for t, p, n in zip(per_image, pos, neg)]
    assert value.item() == pytest.approx(sum(per_image) / 2, rel=1e-4)
    value.backward()  # the gradient flows through the cosine form to R
    assert restored.grad is not None and restored.grad.abs().sum() > 0


@pytest.mark.parametrize("distance", ["l1", "cosine"])
def test_dpc_is_zero_at_the_target_and_positive_elsewhere(standalone, distance) -> None:
    loss = DPCLoss(layers=[0, 2], distance=distance, backbone=standalone.own_backbone)
    clean, degraded = _images(1)
    assert loss(clean, clean, lq=degraded).item() == pytest.approx(0.0, abs=1e-6)  # cosine rounds
    assert loss(degraded, clean, lq=degraded).item() > 1.0  # R == D: the ratio explodes


@pytest.mark.parametrize("distance", ["l1", "cosine"])
def test_a_gradient_step_moves_the_output_toward_the_target_in_feature_space(standalone, distance) -> None:
    loss = DPCLoss(layers=[1, 3], distance=distance, backbone=standalone.own_backbone)
    clean, degraded = _images(2)
    restored = (0.7 * clean + 0.3 * degraded).requires_grad_(True)
    bb, layers, grid = standalone.own_backbone, [1, 3], (5, 5)

    def to_target(x: torch.Tensor) -> float:
        with torch.no_grad():
            a, b = bb(x, layers, grid), bb(clean, layers, grid)
            return sum(feature_distance(a[k], b[k], distance).mean().item() for k in layers)

    before = to_target(restored)
    value = loss(restored, clean, lq=degraded)
    value.backward()
    assert restored.grad is not None and restored.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.parameters())  # frozen weights get nothing
    with torch.no_grad():
        stepped = restored - 0.05 * restored.grad / restored.grad.abs().max()
    assert to_target(stepped) < before
    assert loss(stepped, clean, lq=degraded) < value


def test_weights_and_eps_are_knobs(standalone) -> None:
    clean, degraded = _images(3)
    restored = (clean + degraded) / 2
    bb = standalone.own_backbone
    one = DPCLoss(layers=[1], backbone=bb)(restored, clean, lq=degraded)
    three = DPCLoss(layers=[3], backbone=bb)(restored, clean, lq=degraded)
    mixed = DPCLoss(layers=[1, 3], weights=[2.0, 0.5], backbone=bb)(restored, clean, lq=degraded)
    assert torch.allclose(mixed, 2.0 * one + 0.5 * three, rtol=1e-5)
    big_eps = DPCLoss(layers=[1], eps=1e3, backbone=bb)(restored, clean, lq=degraded)
    assert big_eps < one


def test_bind_shares_the_model_backbone_without_owning_it() -> None:
    torch.manual_seed(0)
    model = tiny_dino_ir()
    loss = build("loss", {"type": "dpc", "layers": [1, 3]})
    assert loss.own_backbone is None
    loss.bind(model)
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    assert loss.bound_model is model and loss._backbone(None) is model.backbone
    lq = torch.rand(1, 3, 24, 32)
    _, aux = model(lq, return_aux=True)
    assert {1, 3} <= set(aux.lq_features) and {2, 5, 8, 11} <= set(aux.lq_features)
    assert loss.guide_pass() is model.guide_pass and loss.guide_pass().token_grid(24, 32) == (3, 4)
    # The loss reads phi(D) from the guide pass: the same value as a fresh pass on lq.
    fresh = DPCLoss(layers=[1, 3], backbone=model.backbone)
    restored = torch.rand(1, 3, 24, 32)
    assert torch.allclose(loss(restored, lq, aux=aux), fresh(restored, lq, lq=lq), rtol=1e-5)


def test_grid_rules_without_a_model(standalone) -> None:
    bb = standalone.own_backbone
    assert DPCLoss(backbone=bb).guide_pass().token_grid(40, 33) == (5, 5)
    assert DPCLoss(backbone=bb, grid_stride=4).guide_pass().token_grid(40, 33) == (10, 9)
    assert DPCLoss(backbone=bb, grid="native").guide_pass().token_grid(40, 33) is None


def test_dpc_errors_name_the_problem(standalone) -> None:
    with pytest.raises(BuildError, match="weights"):
        DPCLoss(layers=[1, 3], weights=[1.0])
    with pytest.raises(BuildError, match="distance"):
        DPCLoss(distance="l2")
    with pytest.raises(BuildError, match="no backbone"):
        DPCLoss().bind(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(BuildError, match="no backbone"):
        DPCLoss()(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), lq=torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="degraded input"):
        DPCLoss(backbone=standalone.own_backbone)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_a_bound_loss_releases_the_backbone_its_spec_built() -> None:
    model = tiny_dino_ir()
    loss = build("loss", {"type": "dpc", "layers": [1, 3], "backbone": TINY_BACKBONE})
    assert loss.own_backbone is not None
    with pytest.warns(UserWarning, match="own 'backbone' spec is unused"):
        loss.bind(model)
    assert loss.own_backbone is None and list(loss.parameters()) == []
    assert loss._backbone(None) is model.backbone
