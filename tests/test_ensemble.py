"""x8 self-ensemble: the 8 flips and rotations, their inverses, whole and tiled restores, eval."""

from __future__ import annotations

import engine_fakes
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from restorekit.engine.ensemble import SelfEnsemble, inverse, transform
from restorekit.engine.infer import restore_tensor


@settings(max_examples=20, deadline=None)
@given(height=st.integers(1, 9), width=st.integers(1, 9), index=st.integers(0, 7))
def test_each_transform_is_undone_by_its_inverse(height: int, width: int, index: int) -> None:
    x = torch.rand(2, 3, height, width)
    assert torch.equal(inverse(transform(x, index), index), x)


def test_the_eight_transforms_are_the_eight_distinct_symmetries_of_a_square() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    seen = {tuple(transform(x, i).flatten().tolist()) for i in range(8)}
    assert len(seen) == 8


class Corner(nn.Module):
    """Not equivariant: adds a ramp that depends on the row index."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 1, x.shape[-2]).view(1, 1, -1, 1)
        return x + ramp


def test_ensemble_averages_the_models_output_over_the_transforms() -> None:
    x = torch.rand(1, 3, 6, 10)
    expected = sum(inverse(Corner()(transform(x, i)), i) for i in range(8)) / 8
    torch.testing.assert_close(SelfEnsemble(Corner())(x), expected)
    torch.testing.assert_close(SelfEnsemble(nn.Identity())(x), x)  # an equivariant model is unchanged


def test_tiled_ensemble_equals_whole_image_ensemble_for_a_local_model() -> None:
    """Tiles restore through the wrapper too: a local conv net gives the same image tiled as whole."""
    torch.manual_seed(0)
    model = SelfEnsemble(engine_fakes.LocalConvNet(width=4).eval())
    x = torch.rand(1, 3, 50, 70)
    whole = restore_tensor(model, x)
    tiled = restore_tensor(model, x, tile=32, overlap=16)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    assert not torch.allclose(whole, restore_tensor(model.model, x), atol=1e-4)  # the ensemble did something


def test_eval_with_self_ensemble_says_so_in_the_protocol() -> None:
    from restorekit.engine.config import EvalConfig
    from restorekit.engine.evaluate import evaluate, protocol, protocol_line

    torch.manual_seed(0)
    model = engine_fakes.LocalConvNet(width=4)
    sets = {"noise": engine_fakes.FakeEvalSet(count=1, size=16)}
    plain = evaluate(model, sets, EvalConfig(crop_multiple=0), torch.device("cpu"))
    cfg = EvalConfig(crop_multiple=0, self_ensemble=True)
    ensembled = evaluate(model, sets, cfg, torch.device("cpu"))
    assert ensembled["tasks"]["noise"]["psnr"] != plain["tasks"]["noise"]["psnr"]
    assert protocol_line(protocol(cfg)).endswith("x8 self-ensemble")
