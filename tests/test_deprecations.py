"""Every public name renamed in 0.2 still works under its old name, with a DeprecationWarning (CHANGELOG.md)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from restorekit import errors, listing
from restorekit.io import state_dict
from restorekit.registry import registry

# (module, old name, new name, the object the new name gives)
RENAMED = [
    ("restorekit", "list_components", "list_parts", listing.list_parts),
    ("restorekit.listing", "list_components", "list_parts", listing.list_parts),
    ("restorekit.listing", "ComponentInfo", "PartInfo", listing.PartInfo),
    ("restorekit.errors", "UnknownComponentError", "UnknownPartError", errors.UnknownPartError),
    ("restorekit.errors", "AmbiguousComponentError", "AmbiguousPartError", errors.AmbiguousPartError),
    ("restorekit.errors", "DuplicateComponentError", "DuplicatePartError", errors.DuplicatePartError),
    ("restorekit.errors", "ComponentLoadError", "PartLoadError", errors.PartLoadError),
    ("restorekit.pretrained", "WEIGHTS_FILE", "MODEL_FILE", "model.safetensors"),
    ("restorekit.io.state_dict", "read_state_dict", "read_state_file", state_dict.read_state_file),
]


@pytest.mark.parametrize(("module", "old", "new", "obj"), RENAMED, ids=[f"{m}.{o}" for m, o, _, _ in RENAMED])
def test_each_old_name_warns_and_gives_the_new_object(module: str, old: str, new: str, obj: object) -> None:
    mod = importlib.import_module(module)
    with pytest.warns(
        DeprecationWarning, match=rf"{re.escape(old)} is deprecated; use .*{new} .*removed in restorekit 0\.3"
    ):
        value = getattr(mod, old)
    assert value is obj or value == obj
    assert old not in vars(mod)  # served by the module's __getattr__ only


def test_old_names_still_work() -> None:
    with pytest.warns(DeprecationWarning):
        from restorekit.errors import UnknownComponentError
    with pytest.raises(UnknownComponentError, match="unknown fusion 'msff'"):  # catches what the registry raises
        registry("fusion").get("msff")
    with pytest.warns(DeprecationWarning):
        from restorekit import list_components
    assert list_components("fusion") == listing.list_parts("fusion")


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        errors.nothing_here  # noqa: B018


def test_the_changelog_lists_every_rename() -> None:
    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text(encoding="utf-8")
    deprecated = changelog.split("### Deprecated", 1)[1].split("\n### ", 1)[0]
    for module, old, new, _ in RENAMED:
        assert f"{module}.{old}`" in deprecated and f"{new}`" in deprecated, old
