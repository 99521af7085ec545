"""One validation pass over a resolved recipe: every problem at once, in one RecipeError.

Each section's own validator (``recipes.validate_recipe``, ``engine.config``,
``building.check_keywords``, ``data.build``, ``engine.published``) raises at its
first problem when called alone; here each is handed a collecting
:class:`~restorekit.errors.Problems`, so a recipe with five independent mistakes
reports all five (torchtune's ``ConfigError``). Parts are built once to check
them: the model and its loss on the meta device (no memory, no GPU), the
optimizer, schedule and metrics as they are, each dataset from its folder (which
finds a missing folder). ``build()`` checks every part against its kind's contract.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from restorekit.building import build, build_model
from restorekit.contracts import BindsToModel
from restorekit.data.build import build_dataset, check_data_config, task_entries
from restorekit.engine.config import check_best_metric, eval_config, train_config
from restorekit.engine.dry_run import on_meta
from restorekit.errors import Problems
from restorekit.recipes import validate_recipe

DATA_SECTIONS = ("train", "val")


def validate(
    recipe: Mapping[str, Any],
    source: str = "recipe",
    *,
    locations: Mapping[str, str] | None = None,
    train: bool = True,
    data: Collection[str] = DATA_SECTIONS,
    origins: Mapping[str, Any] | None = None,
) -> None:
    """Raise one RecipeError listing every problem of ``recipe`` (nothing when it is sound).

    ``locations`` (``recipes.recipe_locations``) adds ``file:line`` to each problem.
    ``train=False`` skips the ``train:`` section and ``data`` names the data sections
    to check (``eval`` needs only ``("val",)``; an empty tuple skips the data section,
    for a run given its own stream). ``origins`` (``recipe_origins.inherited_data_tasks``)
    lets a missing folder of an inherited data task name the base recipe it comes from.
    """
    problems = find_problems(recipe, source, train=train, data=data, origins=origins)
    problems.raise_all(source, locations)


def find_problems(
    recipe: Mapping[str, Any],
    source: str = "recipe",
    *,
    train: bool = True,
    data: Collection[str] = DATA_SECTIONS,
    origins: Mapping[str, Any] | None = None,
) -> Problems:
    """Every problem of ``recipe``, collected (see :func:`validate`)."""
    problems = Problems(collect=True)
    validate_recipe(recipe, source, problems)
    _check_model_and_loss(recipe, problems)
    if data:
        _check_data(recipe.get("data"), data, problems, origins)
    train_cfg = train_config(_section(recipe, "train"), source, problems) if train else None
    eval_cfg = eval_config(_section(recipe, "eval"), source, problems)
    if train_cfg is not None:
        with problems.gather("train.best_metric"):
            check_best_metric(train_cfg, eval_cfg, source, problems)
        _build_each("callback", train_cfg.callbacks, "train.callbacks", problems)
    return problems


def _build_each(kind: str, specs: list[Any], key: str, problems: Problems) -> None:
    """Build each spec not yet found at fault once, so build() checks it against its kind's contract."""
    reported = {problem.key for problem in problems.found}
    for i, spec in enumerate(specs):
        if f"{key}[{i}]" not in reported:
            with problems.gather(f"{key}[{i}]"):
                build(kind, spec)


def _section(recipe: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The recipe with only section ``name`` kept if it is a mapping (a non-mapping is reported once, at the top)."""
    value = recipe.get(name)
    return {name: value} if isinstance(value, (Mapping, type(None))) else {}


def _check_model_and_loss(recipe: Mapping[str, Any], problems: Problems) -> None:
    spec, loss_spec = recipe.get("model"), recipe.get("loss")
    model = loss = None
    if not spec:
        problems.report("the recipe has no 'model' section", "model")
    elif isinstance(spec, Mapping):
        with problems.gather("model"):
            model = on_meta(lambda: build_model(spec))
    if loss_spec is not None and isinstance(loss_spec, Mapping):
        with problems.gather("loss"):
            loss = on_meta(lambda: build("loss", loss_spec))
    if model is not None and isinstance(loss, BindsToModel):
        with problems.gather("loss"):
            loss.bind(model)


def _check_data(section: Any, sections: Collection[str], problems: Problems, origins: Mapping[str, Any] | None) -> None:
    """The data section's keys, then each task's dataset built (a missing folder is found here)."""
    cfg = check_data_config(section, problems)
    for name in (s for s in DATA_SECTIONS if s in sections):
        for entry in task_entries(cfg, name, problems):
            origin = (origins or {}).get(entry.where)
            with problems.gather(entry.where):  # as inspect_data: a hint only for an inherited task
                build_dataset(entry, cfg["root"], cfg["layout"], origin, hint=origins is None or origin is not None)
