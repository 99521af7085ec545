"""Fault suite, bad inputs: wrong value types, bad arguments, unreadable and tiny images,
files that would be overwritten, file modes (docs/reliability.md lists what each covers)."""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, Sequence

import pytest
from hypothesis import given, strategies as st

from restorekit.building import build
from restorekit.cli import main
from restorekit.errors import BuildError
from restorekit.value_types import fits, type_mismatches


# -- 11: a wrong value type names the key, the expected and the given type -------------
def test_a_wrong_value_type_is_an_error_naming_key_expected_and_given_type() -> None:
    with pytest.raises(BuildError) as info:
        build("body", {"type": "restormer", "dim": "sixteen"})
    assert str(info.value) == "body 'restormer': wrong value type for dim: expected int, got str ('sixteen')"
    with pytest.raises(BuildError, match=r"num_blocks: expected list of int, got list \(\[1, 'x'\]\)"):
        build("body", {"type": "restormer", "num_blocks": [1, "x"]})


def test_the_command_line_reports_a_wrong_value_type_without_a_traceback(capsys: pytest.CaptureFixture) -> None:
    code = main(["show", "demo/restormer_tiny", "-o", "model.dim=sixteen", "--params"])
    err = capsys.readouterr().err
    assert code == 2 and "dim: expected int, got str ('sixteen')" in err and "Traceback" not in err


def _factory(count: int, rate: float, name: str, flag: bool, sizes: Sequence[int], pair: tuple[int, int],
             knobs: Mapping[str, float], mode: Literal["a", "b"], maybe: Optional[int], spec: Any,
             loose: int = None) -> None:  # type: ignore[assignment]
    """Annotations as parts write them (``loose`` is annotated int but defaults to None)."""


GOOD = {"count": 3, "rate": 2, "name": "x", "flag": True, "sizes": [1, 2], "pair": [1, 2], "knobs": {"a": 1.5},
        "mode": "b", "maybe": None, "spec": {"type": "anything"}, "loose": None}


def test_valid_values_pass_and_each_clear_mismatch_is_named() -> None:
    assert type_mismatches(_factory, GOOD) == []
    bad = {"count": "3", "rate": "fast", "name": 1, "flag": "yes", "sizes": "12", "pair": [1, 2, 3],
           "knobs": {"a": "b"}, "mode": "c", "maybe": 1.5}
    assert [p.split(":")[0] for p in type_mismatches(_factory, bad)] == list(bad)
    assert type_mismatches(_factory, {"count": True}) == ["count: expected int, got bool (True)"]


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.lists(st.integers()),
                 st.dictionaries(st.text(), st.integers())))
def test_any_and_unknown_classes_accept_every_value(value: Any) -> None:
    assert fits(value, Any) is True
    assert fits(value, BuildError) in (True, None)  # a class a spec may stand for: never a clear mismatch


# -- 12: --tile errors name --tile ------------------------------------------------------
def test_a_negative_tile_is_reported_as_a_tile_error(tmp_path, capsys: pytest.CaptureFixture) -> None:
    code = main(["restore", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--weights", str(tmp_path),
                 "--tile", "-5"])
    err = capsys.readouterr().err
    assert code == 2 and "--tile must be >= 0" in err and "--overlap" not in err
