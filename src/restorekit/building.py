"""Build parts from specs: ``{type: name, **kwargs}`` -> object.

Nested specs are built by the part that owns them (a model builds its body with
``build_part("body", body)``), so each constructor states which kind it expects.
Partial specs (no ``type``) merge onto the owner's defaults with the recipe rules
(:func:`merge_spec`), which is what makes ``build_model("dino_ir",
backbone={"weights": "x.pth"})`` work.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from restorekit.errors import BuildError, Problems, RecipeError
from restorekit.recipes import find_recipe, load_recipe, merge
from restorekit.registry import MODELS, MODULE_KINDS, import_target, registry
from restorekit.value_types import type_mismatches

# The packaging layer's loader of a package folder or Hub id, named here (resolved when first
# used, as the catalog names parts) so this layer never imports the one above it.
PACKAGE_LOADER = "restorekit.pretrained:from_pretrained"
PackageLoader = Callable[..., Any]
_package_loaders: list[PackageLoader] = []


def split_spec(kind: str, spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, kwargs) of a spec given as a name or a mapping with ``type``."""
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping):
        raise BuildError(f"a {kind} spec must be a name or a mapping with 'type', got {spec!r}")
    if "type" not in spec:
        known = ", ".join(registry(kind).names())
        raise BuildError(f"{kind} spec {dict(spec)!r} has no 'type' (known {kind}s: {known})")
    kwargs = dict(spec)
    return str(kwargs.pop("type")), kwargs


def accepted_keywords(factory: Any) -> tuple[list[str], bool]:
    """Keyword names ``factory`` accepts, and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


# Kinds whose registered object is the part itself (a function), not a factory of it:
# building one binds the spec's knobs (``{type: ssim, gaussian: true}``) instead of calling it.
FUNCTION_KINDS = frozenset({"metric"})


def build(kind: str, spec: str | Mapping[str, Any], **extra: Any) -> Any:
    """Build the part a spec names; ``extra`` keywords join the spec's own.

    Works for every kind: ``build("fusion", {"type": "msf", ...})`` returns a module,
    ``build("metric", "psnr")`` the metric function, ``build("optimizer", "adamw",
    params=..., lr=...)`` an optimizer.
    """
    name, kwargs = split_spec(kind, spec)
    kwargs.update(extra)
    factory = registry(kind).get(name)
    check_keywords(kind, name, factory, kwargs, engine_given=extra)
    if kind in FUNCTION_KINDS:
        # update_wrapper: the function's declared attributes (a metric's higher_is_better) stay on the partial.
        part = functools.update_wrapper(functools.partial(factory, **kwargs), factory) if kwargs else factory
    else:
        part = factory(**kwargs)
        if kind in MODULE_KINDS:  # modules keep their spec; a schedule must not (it would enter its state_dict)
            keep_spec(part, {"type": name, **kwargs})
    return checked(kind, part)


def checked(kind: str, part: Any) -> Any:
    """``part``, once it keeps its kind's contract (the one place parts are checked: a BuildError
    naming the missing members otherwise)."""
    from restorekit.contracts import check_part  # why: contracts imports torch; `import restorekit` stays light

    check_part(kind, part, kind)
    return part


def keep_spec(part: Any, spec: Mapping[str, Any]) -> Any:
    """``part`` with ``part.spec`` set to the spec it was built from (like timm's ``pretrained_cfg``).

    ``save_pretrained(model, folder)`` writes it back as the package's recipe, so a
    model needs no ``recipe=``. Objects that take no attributes are returned as they are.
    """
    try:
        part.spec = dict(spec)
    except (AttributeError, TypeError):  # a slotted or frozen object: nothing to keep it on
        pass
    return part


def check_keywords(
    kind: str,
    name: str,
    factory: Any,
    kwargs: Mapping[str, Any],
    *,
    engine_given: Collection[str] = (),
    problems: Problems | None = None,
) -> None:
    """BuildError when ``kwargs`` holds a keyword ``factory`` does not take, or a value of a clearly
    wrong type for its annotation (key, expected and given type named).

    ``engine_given``: keywords the engine passes itself (``params``, ``lr``); their
    names are checked, their values are not (a caller may pass placeholders). A
    collecting ``problems`` gets both findings instead of the first.
    """
    problems = Problems() if problems is None else problems
    names, var_kw = accepted_keywords(factory)
    unexpected = sorted(k for k in kwargs if k not in names)
    if unexpected and not var_kw:
        hints = [f"{k!r} -> {close[0]!r}" for k in unexpected
                 if (close := difflib.get_close_matches(k, names, n=1, cutoff=0.75))]  # fmt: skip
        problems.report(
            f"{kind} {name!r} got unexpected keyword(s) {', '.join(map(repr, unexpected))}; "
            + (f"did you mean {', '.join(hints)}? " if hints else "")
            + f"accepted: {', '.join(names) or '(none)'}",
            error=BuildError,
        )
    wrong = type_mismatches(factory, kwargs, skip=engine_given)
    if wrong:
        problems.report(f"{kind} {name!r}: wrong value type for " + "; ".join(wrong), error=BuildError)


def build_part(kind: str, spec_or_part: Any, **extra: Any) -> Any:
    """Build ``spec_or_part`` if it is a spec; pass an already built part through."""
    if isinstance(spec_or_part, (str, Mapping)):
        return build(kind, spec_or_part, **extra)
    return checked(kind, spec_or_part)


def merge_spec(default: Mapping[str, Any], given: Any) -> Any:
    """A part's default spec with the user's (partial) spec merged on top.

    ``None`` keeps the default, a built object is used as is, a name string
    switches type, and a mapping merges by the recipe rules (a different ``type``
    replaces the default whole).
    """
    if given is None:
        return dict(default)
    if isinstance(given, str):
        return merge(default, {"type": given})
    if isinstance(given, Mapping):
        return merge(default, given)
    return given


def _looks_like_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or os.sep in name and Path(name).exists()


def model_spec(name_or_recipe: str | Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The model spec ``build_model`` would build (a registered model or a recipe's model)."""
    if isinstance(name_or_recipe, Mapping):
        spec = dict(name_or_recipe)
    elif not _looks_like_path(name_or_recipe) and name_or_recipe in MODELS:
        spec = {"type": name_or_recipe}
    else:
        try:
            find_recipe(name_or_recipe)
        except RecipeError:
            if _looks_like_path(name_or_recipe):
                raise
            MODELS.get(name_or_recipe)  # raises the unknown-model error with close matches
        recipe = load_recipe(name_or_recipe)
        if not recipe.get("model"):
            raise RecipeError(f"recipe {name_or_recipe!r} has no 'model' section")
        spec = recipe["model"]
    return merge(spec, overrides) if overrides else spec


def build_model(name_or_recipe: str | Mapping[str, Any] = "dino_ir", **overrides: Any) -> Any:
    """The front door: a model by registered name, recipe name or path, spec, or pretrained package.

    ``build_model("dino_ir", fusion={"type": "concat"})`` merges the keywords onto
    the model spec with the recipe rules. A package folder or ``hf:org/name`` gives
    the trained model, through the package loader (:func:`package_loader`). The model
    keeps the spec it was built from as ``model.spec``.
    """
    if isinstance(name_or_recipe, (str, os.PathLike)) and (
        str(name_or_recipe).startswith("hf:") or Path(name_or_recipe).is_dir()
    ):
        return package_loader()(name_or_recipe, **overrides)
    return build("model", model_spec(name_or_recipe, **overrides))


def register_package_loader(loader: PackageLoader) -> None:
    """Make ``loader(source, **overrides)`` the one ``build_model`` hands package folders and Hub ids to."""
    _package_loaders.append(loader)


def package_loader() -> PackageLoader:
    """The registered package loader, else the packaging layer's own (:data:`PACKAGE_LOADER`)."""
    return _package_loaders[-1] if _package_loaders else import_target(PACKAGE_LOADER)
