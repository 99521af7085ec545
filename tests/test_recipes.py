"""Recipe loading, inheritance, merge rules and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from restorekit.errors import RecipeError
from restorekit.recipes import (
    apply_overrides,
    dump_recipe,
    load_recipe,
    merge,
    parse_override,
    parse_yaml,
    recipe_diff,
)

# -- strategies for recipe-like trees ------------------------------------------------
keys = st.sampled_from(["a", "b", "c", "lr", "dim", "layers"])
scalars = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.text(max_size=4),
    st.none(),
)
types = st.sampled_from(["msf", "concat", "film"])


def trees(max_leaves: int = 12, markers: bool = False):
    """Recipe-like values: scalars, lists, and mappings with or without a ``type`` at any depth.

    ``markers``: some mappings carry ``_replace_: true`` (as an override may).
    """

    def mapping(children):
        plain = st.dictionaries(keys, children, max_size=4)
        typed = st.fixed_dictionaries({"type": types}, optional={"a": children, "b": children, "x": children})
        node = plain | typed
        if markers:
            node = node | st.builds(lambda m: {**m, "_replace_": True}, plain | typed)
        return node

    return st.recursive(scalars | st.lists(st.integers(0, 9), max_size=3), mapping, max_leaves=max_leaves)


mappings = st.dictionaries(keys, trees(), max_size=4)
overrides = st.dictionaries(keys, trees(markers=True), max_size=4)


def leaves(node, prefix=()):
    """(path, value) of each non-mapping value; an empty mapping overrides nothing."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, prefix + (k,))
    else:
        yield prefix, node


@settings(max_examples=60, deadline=None)
@given(mappings)
def test_merging_an_empty_override_is_the_identity(base):
    assert merge(base, {}) == base


@settings(max_examples=60, deadline=None)
@given(mappings, mappings)
def test_an_override_always_wins(base, override):
    merged = merge(base, override)
    for path, value in leaves(override):
        node = merged
        for key in path:
            node = node[key]
        assert node == value


@settings(max_examples=60, deadline=None)
@given(mappings, mappings)
def test_applying_the_same_override_twice_changes_nothing(base, override):
    once = merge(base, override)
    assert merge(once, override) == once


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(), max_size=4), st.lists(st.integers(), max_size=4))
def test_lists_replace(a, b):
    assert merge({"k": a}, {"k": b}) == {"k": b}


@settings(max_examples=60, deadline=None)
@given(types, types, st.dictionaries(keys, scalars, max_size=3), st.dictionaries(keys, scalars, max_size=3))
def test_a_type_switch_never_leaks_the_old_parts_keys(t1, t2, kw1, kw2):
    base = {"fusion": {"type": t1, "old_only": 1, **kw1}}
    merged = merge(base, {"fusion": {"type": t2, **kw2}})
    if t1 != t2:
        assert merged["fusion"] == {"type": t2, **kw2}
    else:
        assert merged["fusion"]["old_only"] == 1


def untouched(base, override, path=()):
    """(path, value) of every base value the docs say an override leaves alone.

    Under a node the override does not replace (it brings no ``_replace_`` and no
    ``type`` other than the base node's own; a ``type`` where the base has none is no
    switch), a base key the override does not name keeps its value.
    """
    if not isinstance(base, dict) or not isinstance(override, dict) or override.get("_replace_"):
        return
    if "type" in base and "type" in override and base["type"] != override["type"]:
        return
    for key, value in base.items():
        if key not in override:
            yield path + (key,), value
        else:
            yield from untouched(value, override[key], path + (key,))


def at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def nested(path, node):
    for key in reversed(path):
        node = {key: node}
    return node


@settings(max_examples=100, deadline=None)
@given(mappings, overrides)
def test_what_an_override_does_not_name_keeps_its_value(base, override):
    merged = merge(base, override)
    for path, value in untouched(base, override):
        assert at(merged, path) == value, path


@settings(max_examples=60, deadline=None)
@given(
    st.lists(keys, max_size=3),
    st.dictionaries(keys, trees(), min_size=1, max_size=4),
    types,
    st.dictionaries(keys, trees(), max_size=3),
)
def test_a_type_where_the_base_has_none_merges_and_keeps_the_base(path, base_node, new_type, kwargs):
    """Not a switch: a base node without ``type`` (a spec relying on the default part)."""
    override = {"type": new_type, **kwargs}
    merged = at(merge(nested(path, base_node), nested(path, override)), path)
    assert merged["type"] == new_type
    for key, value in base_node.items():
        if key not in kwargs:
            assert merged[key] == value, key


@settings(max_examples=100, deadline=None)
@given(
    st.lists(keys, max_size=3),
    types,
    types,
    st.dictionaries(keys, trees(), max_size=3),
    st.dictionaries(keys, st.dictionaries(keys, trees(), min_size=1, max_size=3), min_size=1, max_size=3),
    st.dictionaries(keys, trees(), max_size=3),
)
def test_a_type_switch_at_any_depth_leaks_no_nested_mapping_of_the_old_part(path, t1, t2, old_kw, old_maps, new_kw):
    assume(t1 != t2)
    old = {**old_kw, **old_maps, "type": t1}  # at least one value of the old part is a mapping
    new = {**new_kw, "type": t2}
    merged = merge(nested(path, old), nested(path, new))
    assert at(merged, path) == new


def test_explicit_replace_marker():
    base = {"data": {"a": 1, "b": 2}}
    assert merge(base, {"data": {"_replace_": True, "c": 3}}) == {"data": {"c": 3}}


def test_inputs_are_not_modified():
    base, over = {"a": {"b": [1]}}, {"a": {"c": 2}}
    merged = merge(base, over)
    merged["a"]["b"].append(9)
    assert base == {"a": {"b": [1]}} and over == {"a": {"c": 2}}


# -- YAML -------------------------------------------------------------------------
def test_exponent_floats_read_as_floats():
    assert parse_yaml("lr: 2e-4\nx: 1E5\ny: 3") == {"lr": 2e-4, "x": 1e5, "y": 3}
    assert isinstance(parse_yaml("lr: 2e-4")["lr"], float)


def test_duplicate_keys_are_errors_naming_the_file(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(RecipeError, match=r"dup.yaml:3: duplicate key 'lr'"):
        load_recipe(path)


def test_unsafe_tags_are_rejected(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(RecipeError, match="evil.yaml"):
        load_recipe(path)


# -- inheritance ---------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_inheritance_relative_to_the_file(tmp_path):
    write(
        tmp_path / "base.yaml",
        "model:\n  type: dino_ir\n  fusion: {type: msf, experts: 4}\ntrain: {lr: 2e-4, iterations: 10}\n",
    )
    child = write(
        tmp_path / "sub" / "child.yaml",
        "base: ../base.yaml\nmodel:\n  fusion: {type: concat}\ntrain: {iterations: 20}\n",
    )
    recipe = load_recipe(child)
    assert recipe == {
        "model": {"type": "dino_ir", "fusion": {"type": "concat"}},
        "train": {"lr": 2e-4, "iterations": 20},
    }


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_missing_base_names_the_referencing_file(tmp_path):
    path = write(tmp_path / "a.yaml", "base: nowhere.yaml\n")
    with pytest.raises(RecipeError, match=r"'nowhere.yaml' not found \(referenced from"):
        load_recipe(path)


def test_unknown_top_level_key_names_file_and_key(tmp_path):
    path = write(tmp_path / "a.yaml", "trian: {lr: 1}\n")
    with pytest.raises(RecipeError, match=r"unknown top-level key 'trian'; did you mean 'train'"):
        load_recipe(path)


# -- overrides -------------------------------------------------------------------------
def test_overrides_parse_with_the_same_loader():
    assert parse_override("train.lr=2e-4") == (["train", "lr"], 2e-4)
    assert parse_override("model.layers=[1, 2]") == (["model", "layers"], [1, 2])
    assert parse_override("model.fusion={type: concat}") == (["model", "fusion"], {"type": "concat"})
    with pytest.raises(RecipeError, match="key.path=value"):
        parse_override("novalue")


def test_overrides_follow_the_merge_rules():
    recipe = {"model": {"fusion": {"type": "msf", "experts": 4}}, "loss": {"terms": [{"w": 1}, {"w": 2}]}}
    out = apply_overrides(recipe, ["model.fusion.type=concat", "loss.terms.1.w=0"])
    assert out["model"]["fusion"] == {"type": "concat"}
    assert out["loss"]["terms"] == [{"w": 1}, {"w": 0}]
    with pytest.raises(RecipeError, match="'loss.terms.5'"):
        apply_overrides(recipe, ["loss.terms.5.w=0"])
    with pytest.raises(RecipeError, match="'model.fusion.experts.x'"):
        apply_overrides(recipe, ["model.fusion.experts.x=1"])


@settings(max_examples=40, deadline=None)
@given(mappings, st.lists(st.tuples(st.lists(keys, min_size=1, max_size=3), st.integers(0, 9)), max_size=4))
def test_override_application_is_idempotent(recipe, overrides):
    paths = [tuple(path) for path, _ in overrides]
    # Overrides that conflict (one key inside another's scalar) are an error, not a property.
    assume(not any(p != q and q[: len(p)] == p for p in paths for q in paths))
    items = {".".join(path): value for path, value in overrides}
    try:
        once = apply_overrides(recipe, items)
    except RecipeError:
        return  # e.g. a path through a scalar; errors are tested above
    assert apply_overrides(once, items) == once


def test_dump_round_trips_and_diff(tmp_path):
    recipe = {"model": {"type": "dino_ir", "layers": [2, 5]}, "train": {"lr": 2e-4}}
    assert parse_yaml(dump_recipe(recipe)) == recipe
    other = {"model": {"type": "dino_ir", "layers": [5]}, "train": {"lr": 2e-4, "ema": 0.9}}
    assert recipe_diff(recipe, other)[0] == ("model.layers", [2, 5], [5])
    assert [row[0] for row in recipe_diff(recipe, other)] == ["model.layers", "train.ema"]


# -- review fixes ----------------------------------------------------------------------
def test_replace_markers_are_stripped_without_a_base(tmp_path):
    path = write(tmp_path / "a.yaml", "model:\n  type: dino_ir\n  fusion: {_replace_: true, type: concat}\n")
    assert load_recipe(path) == {"model": {"type": "dino_ir", "fusion": {"type": "concat"}}}


def test_merge_key_then_explicit_override_is_not_a_duplicate():
    text = "x: &x {a: 1, b: 2}\ny:\n  <<: *x\n  a: 3\n"
    assert parse_yaml(text) == {"x": {"a": 1, "b": 2}, "y": {"a": 3, "b": 2}}
    # An explicit key written twice next to a merge key is still a duplicate.
    with pytest.raises(RecipeError, match=r"f.yaml:5: duplicate key 'a'"):
        parse_yaml("x: &x {a: 1}\ny:\n  <<: *x\n  a: 2\n  a: 3\n", "f.yaml")


def test_non_utf8_recipe_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin1.yaml: a recipe must be UTF-8"):
        load_recipe(path)


def test_unhashable_key_is_an_error_naming_file_and_line(tmp_path):
    path = write(tmp_path / "cplx.yaml", "name: x\n? [a, b]\n: 1\n")
    with pytest.raises(RecipeError, match=r"cplx.yaml:2: a mapping key must be a scalar"):
        load_recipe(path)


def test_base_is_not_looked_up_in_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "dino_ir.yaml", "name: SHADOW_FROM_CWD\n")
    child = write(tmp_path / "sub" / "mine.yaml", "base: dino_ir.yaml\ntrain: {batch_size: 2}\n")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(child)
    assert recipe["name"] != "SHADOW_FROM_CWD" and recipe["train"]["batch_size"] == 2
    # A path given on the command line is still taken from the working directory.
    assert load_recipe("dino_ir.yaml")["name"] == "SHADOW_FROM_CWD"


def test_yml_recipes_are_found_and_listed(tmp_path, monkeypatch):
    from restorekit.recipes import find_recipe, list_recipes

    write(tmp_path / "extra" / "short.yml", "name: short\n")
    monkeypatch.setenv("RESTOREKIT_RECIPE_PATH", str(tmp_path))
    assert list_recipes()["extra/short"] == str(tmp_path)
    assert find_recipe("extra/short") == (tmp_path / "extra" / "short.yml").resolve()


recipe_scalars = st.one_of(
    st.text(max_size=8),
    st.from_regex(r"[-+]?[0-9]{1,3}(\.[0-9]*)?[eE][-+]?[0-9]{1,2}", fullmatch=True),
    st.floats(allow_nan=False),
    st.integers(),
    st.booleans(),
    st.none(),
)
recipe_trees = st.recursive(
    recipe_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), recipe_trees, max_size=4))
def test_dump_round_trips_through_parse_yaml(recipe):
    assert parse_yaml(dump_recipe(recipe)) == recipe
    assert not recipe_diff(parse_yaml(dump_recipe(recipe)), recipe)


def test_dump_quotes_strings_the_loader_reads_as_floats():
    recipe = {"a": "1e5", "b": "3e-4", "c": 3e-4}
    assert parse_yaml(dump_recipe(recipe)) == recipe


def test_diff_sees_type_changes():
    a = {"train": {"ema": True, "batch_size": 64, "x": [1]}}
    b = {"train": {"ema": 1, "batch_size": 64.0, "x": [True]}}
    assert [row[0] for row in recipe_diff(a, b)] == ["train.batch_size", "train.ema", "train.x"]
    assert recipe_diff(a, a) == []
    assert recipe_diff({"x": float("nan")}, {"x": float("nan")}) == []


# -- hostile recipes: aliases, expansion, nesting (docs/reliability.md) ------------------
def _one_line_recipe_error(path: Path, timeout: float) -> str:
    """Load ``path`` in a child process (killed after ``timeout`` s); the RecipeError it prints."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\nfrom restorekit.errors import RecipeError\nfrom restorekit.recipes import load_recipe\n"
        "try:\n    load_recipe(sys.argv[1])\nexcept RecipeError as exc:\n    print(exc)\n    sys.exit(3)\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert done.returncode == 3, done.stderr[-2000:]
    return done.stdout


def test_an_alias_bomb_is_refused_quickly_naming_the_file_and_line(tmp_path):
    """Nine levels of nine-fold aliases: 9**9 values once expanded, a few hundred bytes of YAML."""
    lines = ["name: bomb", "model:", "  a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"  {name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = write(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")
    out = _one_line_recipe_error(path, timeout=60)  # the walk that expanded it ran for many minutes
    # 9**6 = 531441 values under key f (line 8) is the first node past the limit of 100000.
    assert out == f"{path}:8: YAML aliases expand to more than 100000 values; a recipe needs far fewer\n"


def test_too_many_aliases_are_refused_naming_the_file_and_line(tmp_path):
    path = write(tmp_path / "many.yaml", "name: many\nx: &x 1\ny:\n" + "  - *x\n" * 1001)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:1004: more than 1000 YAML aliases; a recipe needs far fewer"


def test_deep_nesting_is_a_one_line_error_not_a_recursion_error(tmp_path):
    path = write(tmp_path / "deep.yaml", "name: deep\nmodel:\n  x: " + "[" * 500 + "]" * 500 + "\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:3: nesting deeper than 100 levels; a recipe needs far fewer"
    nested = "model:\n  x: " + "[" * 98 + "1" + "]" * 98 + "\n"  # 100 levels with the mapping and model
    assert parse_yaml(nested)["model"]["x"][0][0] is not None


def test_the_marker_walk_visits_a_shared_node_once():
    """A node reached by 2**40 paths is copied once, and the copies stay shared as in the input."""
    import signal

    from restorekit.recipes import strip_replace_markers

    leaf = {"_replace_": True, "type": "concat"}
    node: object = [leaf]
    for _ in range(40):
        node = [node, node]

    def too_slow(*_: object) -> None:
        raise TimeoutError("strip_replace_markers walked the shared graph as a tree")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(10)
    try:
        out = strip_replace_markers(node)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert out[0] is out[1] and out[0] is not node[0]
    for _ in range(40):
        out = out[0]
    assert out == [{"type": "concat"}] and leaf == {"_replace_": True, "type": "concat"}
