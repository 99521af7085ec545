"""Registry behaviour: registration, lookup errors, building specs."""

from __future__ import annotations

import pytest

import restorekit
from restorekit.building import build, build_part, merge_spec, model_spec
from restorekit.errors import BuildError, DuplicatePartError, UnknownPartError
from restorekit.registry import FUSIONS, KINDS, registry


class Widget:
    """A fake fusion: it keeps the fusion contract (a call on the features), as build() checks."""

    def __init__(self, size: int, color: str = "red") -> None:
        self.size, self.color = size, color

    def __call__(self, feats: list) -> object:
        return feats[0]


class Holder:
    def __init__(self, inner: dict | Widget, scale: float = 1.0) -> None:
        self.inner = build_part("fusion", merge_spec({"type": "rk_test_widget", "size": 1}, inner))
        self.scale = scale

    def __call__(self, feats: list) -> object:
        return self.inner(feats)


@pytest.fixture
def widget():
    FUSIONS.register("rk_test_widget", Widget)
    FUSIONS.register("rk_test_holder", Holder)
    yield
    FUSIONS.unregister("rk_test_widget")
    FUSIONS.unregister("rk_test_holder")


def test_every_kind_has_a_registry():
    assert set(KINDS) == {
        "backbone",
        "fusion",
        "adapter",
        "body",
        "model",
        "loss",
        "metric",
        "optimizer",
        "schedule",
        "logger",
        "callback",
        "degradation",
        "dataset",
    }
    for kind in KINDS:
        assert registry(kind).kind == kind
    groups = {registry(kind).group for kind in KINDS}
    assert groups == {
        "restorekit.backbones",
        "restorekit.fusions",
        "restorekit.adapters",
        "restorekit.bodies",
        "restorekit.models",
        "restorekit.losses",
        "restorekit.metrics",
        "restorekit.optimizers",
        "restorekit.schedules",
        "restorekit.loggers",
        "restorekit.callbacks",
        "restorekit.degradations",
        "restorekit.datasets",
    }


def test_builtins_are_listed_lazily():
    entries = {e.name: e for e in registry("fusion").entries()}
    assert entries["msf"].source == "builtin"
    assert entries["msf"].target == "restorekit.fusion.msf:MultiLayerSemanticFusion"


def test_decorator_and_build(widget):
    obj = build("fusion", {"type": "rk_test_widget", "size": 3})
    assert isinstance(obj, Widget) and obj.size == 3 and obj.color == "red"
    assert build("fusion", "rk_test_widget", size=2).size == 2


def test_decorator_form_registers_and_returns_the_class():
    @restorekit.register("loss", "rk_test_decorated")
    class Decorated:
        pass

    try:
        assert registry("loss").get("rk_test_decorated") is Decorated
    finally:
        registry("loss").unregister("rk_test_decorated")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownPartError) as err:
        registry("fusion").get("msff")
    msg = str(err.value)
    assert "unknown fusion 'msff'" in msg and "'msf'" in msg


def test_unknown_kind_suggests_close_kinds():
    with pytest.raises(UnknownPartError, match="did you mean 'fusion'"):
        registry("fusions")


def test_unexpected_keyword_lists_accepted(widget):
    with pytest.raises(BuildError) as err:
        build("fusion", {"type": "rk_test_widget", "size": 1, "colour": "blue"})
    assert "'colour'" in str(err.value) and "size, color" in str(err.value)


def test_spec_without_type_is_a_clear_error():
    with pytest.raises(BuildError, match="has no 'type'"):
        build("fusion", {"size": 1})


def test_duplicate_registration_says_where_the_existing_one_lives(widget):
    with pytest.raises(DuplicatePartError) as err:
        FUSIONS.register("rk_test_widget", Widget)
    assert "test_registry:Widget" in str(err.value)
    with pytest.raises(DuplicatePartError, match="restorekit.fusion.msf:MultiLayerSemanticFusion"):
        FUSIONS.register("msf", Widget)


def test_nested_specs_build_recursively_and_merge_onto_defaults(widget):
    holder = build("fusion", {"type": "rk_test_holder", "inner": {"size": 5}})
    assert isinstance(holder.inner, Widget) and holder.inner.size == 5
    built = Widget(9)
    assert build("fusion", {"type": "rk_test_holder", "inner": built}).inner is built


def test_merge_spec_type_switch_replaces_default():
    assert merge_spec({"type": "msf", "experts": 4}, {"type": "concat"}) == {"type": "concat"}
    assert merge_spec({"type": "msf", "experts": 4}, {"experts": 2}) == {"type": "msf", "experts": 2}
    assert merge_spec({"type": "msf", "experts": 4}, None) == {"type": "msf", "experts": 4}
    assert merge_spec({"type": "msf", "experts": 4}, "concat") == {"type": "concat"}


def test_model_spec_merges_keyword_overrides():
    spec = model_spec("dino_ir", fusion={"type": "concat"}, backbone={"weights": "x.pth"})
    assert spec == {"type": "dino_ir", "fusion": {"type": "concat"}, "backbone": {"weights": "x.pth"}}


def test_model_spec_unknown_name_is_a_model_error():
    with pytest.raises(UnknownPartError, match="unknown model 'dino_irr'.*'dino_ir'"):
        model_spec("dino_irr")


def test_a_misspelled_keyword_gets_its_close_match() -> None:
    with pytest.raises(BuildError, match=r"'max_sise'; did you mean 'max_sise' -> 'max_size'\? accepted: "):
        build("dataset", {"type": "samples", "split": "train", "max_sise": 64})
    with pytest.raises(BuildError, match=r"unexpected keyword\(s\) 'zzz'; accepted: "):  # nothing close
        build("dataset", {"type": "samples", "split": "train", "zzz": 64})


def test_bodies_are_models_through_one_registration():
    """A body is a complete model: offered by the model registry, registered once (as a body)."""
    from restorekit.catalog import BUILTINS
    from restorekit.listing import list_parts

    bodies = set(BUILTINS["body"])
    assert bodies.isdisjoint(BUILTINS["model"])  # no second registration
    assert bodies <= set(registry("model").names()) and all(name in registry("model") for name in bodies)
    assert registry("model").get("restormer") is registry("body").get("restormer")
    rows = {row.name: row for row in list_parts("model")}
    assert rows["restormer"].source == "builtin (body)" and rows["dino_ir"].source == "builtin"
    model = build("model", {"type": "restormer", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1})
    assert type(model).__name__ == "Restormer"


def test_a_model_of_the_same_name_wins_over_a_body():
    class Mine:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    registry("model").register("restormer", Mine)
    try:
        assert isinstance(build("model", "restormer"), Mine)
        assert [row.source for row in registry("model").entries() if row.name == "restormer"] == ["user"]
    finally:
        registry("model").unregister("restormer")
    assert registry("model").get("restormer") is registry("body").get("restormer")
