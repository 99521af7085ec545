"""The one state-dict path: every wrapper, prefix and format reads back to the same tensors,
and every reader of the library (bodies, backbones, the engine) goes through it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import restorekit
import restorekit.state_dict as old_module
from restorekit.bodies import weights as body_weights
from restorekit.engine import checkpoint
from restorekit.errors import CheckpointError
from restorekit.io.state_dict import WRAPPER_KEYS, check_fit, load_state_file, read_state_file
from restorekit.tiny import TINY

STATE = {"a.weight": torch.arange(6.0).view(2, 3), "b.bias": torch.ones(4)}


def _write(path: Path, state: dict, wrapper: str | None, prefix: str, fmt: str) -> Path:
    inner = {prefix + k: v for k, v in state.items()}
    if fmt == "safetensors":
        file = path / "w.safetensors"
        save_file(inner, str(file))
    else:
        file = path / "w.pth"
        torch.save({wrapper: inner, "epoch": 3} if wrapper else inner, file)
    return file


@settings(max_examples=30, deadline=None)
@given(wrapper=st.sampled_from([None, *WRAPPER_KEYS]), prefix=st.sampled_from(["", "net.", "module."]),
       fmt=st.sampled_from(["pth", "safetensors"]))  # fmt: skip
def test_every_wrapper_prefix_and_format_reads_back_the_same_tensors(
    tmp_path_factory: pytest.TempPathFactory, wrapper: str | None, prefix: str, fmt: str
) -> None:
    file = _write(tmp_path_factory.mktemp("sd"), STATE, wrapper, prefix, fmt)
    read = read_state_file(file)
    assert read.state.keys() == STATE.keys() and all(torch.equal(read.state[k], STATE[k]) for k in STATE)
    assert read.source_key == (wrapper if fmt == "pth" else None)


def test_files_restorekit_wrote_are_read_as_written(tmp_path: Path) -> None:
    """A model whose every key starts with ``net.`` keeps it: no released-layout guessing."""
    file = _write(tmp_path, STATE, None, "net.", "safetensors")
    assert set(read_state_file(file, released=False).state) == {"net.a.weight", "net.b.bias"}


def test_misfits_name_the_file_the_architecture_and_the_keys() -> None:
    with pytest.raises(CheckpointError) as info:
        check_fit(
            {"a": torch.zeros(2), "c": torch.zeros(1)}, {"a": torch.zeros(3), "d": torch.zeros(1)}, "f.pth", "net"
        )
    text = str(info.value)
    assert text.startswith("f.pth does not fit net: 1 missing key(s) (first: c); 1 unexpected key(s) (first: d)")
    assert "a: file (3,) vs model (2,)" in text


def test_refuses_pickled_objects(tmp_path: Path) -> None:
    file = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": Path("x")}, file)
    with pytest.raises(CheckpointError, match=r"evil.pth.*weights_only=True"):
        read_state_file(file)


def test_bodies_backbones_and_the_engine_read_a_lightning_file_alike(tmp_path: Path) -> None:
    """One reader: a Lightning-wrapped ``net.`` file loads as body weights and as backbone weights."""
    body = restorekit.build("body", {"type": "restormer", **TINY["body"]["restormer"]})
    body_file = tmp_path / "body.ckpt"
    torch.save({"state_dict": {"net." + k: v for k, v in body.state_dict().items()}}, body_file)
    loaded = restorekit.build("body", {"type": "restormer", **TINY["body"]["restormer"], "weights": str(body_file)})
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded.eval()(x), body.eval()(x))

    spec = {"type": "dinov2", "size": "s", **TINY["backbone"]["dinov2"]}
    backbone = restorekit.build("backbone", spec)
    vit_file = tmp_path / "vit.ckpt"
    torch.save({"state_dict": {"net." + k: v for k, v in backbone.model.state_dict().items()}}, vit_file)
    again = restorekit.build("backbone", {**spec, "weights": str(vit_file)})
    torch.testing.assert_close(again(x, [1])[1], backbone(x, [1])[1])


def test_the_loader_copies_strictly_drops_ignorable_modules_and_refuses_nan(tmp_path: Path) -> None:
    module = torch.nn.Linear(3, 2)
    state = {"weight": torch.arange(6.0).view(2, 3), "bias": torch.tensor([5.0, 6.0]), "unused.x": torch.ones(1)}
    file = tmp_path / "w.pth"
    torch.save({"params": state}, file)
    report = load_state_file(module, file, architecture="a linear layer", ignorable=["unused"])
    assert torch.equal(module.weight, state["weight"]) and torch.equal(module.bias, state["bias"])
    assert (report.source_key, report.loaded, report.ignored) == ("params", 2, ["unused.x"])
    with pytest.raises(CheckpointError, match=r"w\.pth.*does not fit a linear layer: 1 unexpected key"):
        load_state_file(module, file, architecture="a linear layer")
    torch.save({"weight": torch.full((2, 3), float("nan")), "bias": torch.zeros(2)}, file)
    with pytest.raises(CheckpointError, match="NaN or infinite values in 1 tensor"):
        load_state_file(module, file)


def test_the_old_names_still_work_and_warn(tmp_path: Path) -> None:
    file = _write(tmp_path, STATE, "params", "", "pth")
    with pytest.warns(DeprecationWarning, match="restorekit.io.state_dict.read_state_file instead"):
        reader = old_module.read_state_file  # the moved module's names, at its old path
    assert reader(file).state.keys() == STATE.keys()
    module = torch.nn.Linear(3, 2)
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, str(plain), metadata={"format": "x"})
    with pytest.warns(DeprecationWarning, match="load_state_file"):
        assert checkpoint.load_weights(module, plain) == {"format": "x"}
    assert torch.equal(module.weight, torch.ones(2, 3))
    with pytest.warns(DeprecationWarning, match="load_state_file"):
        body_weights.load_weights(module, plain, architecture="a linear layer")
