"""From a recipe's ``data`` section to a training stream and evaluation sets.

```yaml
data:
  root: data                 # protocol datasets read <root>/<task>/<split>/
  layout: null               # restorekit | promptir | adair; null: detected from the root
  patch_size: 128
  augment: true              # the 8 flips and rotations
  num_workers: 4
  pin_memory: null           # page-locked batches: null = when training on CUDA
  prefetch: 2                # batches each worker keeps ready ahead of the loop
  train:                     # task name -> dataset spec and its share
    denoise_15: {dataset: {type: denoise, split: train, sigma: 15}, repeat: 3}
    derain:     {dataset: {type: derain, split: train}, repeat: 120}
  val:                       # task name -> full-size test images
    derain:     {dataset: {type: derain, split: test}, limit: 20}
```

Shares: with ``repeat`` (default 1) a task is drawn in proportion to
``repeat * its image count``, as if its image list were repeated and all lists
concatenated (PromptIR's sampler); with ``weight`` it is drawn in proportion to
the weight whatever its size. One section uses one rule.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Subset

from restorekit.building import accepted_keywords, build, split_spec
from restorekit.data.layouts import LAYOUTS, detect_layout, layout_kwargs
from restorekit.data.stream import TaskSource, TrainStream
from restorekit.errors import DataError, Problems, RecipeError, RestorekitError
from restorekit.registry import registry

log = logging.getLogger("restorekit.data")

DATA_KEYS = ("root", "layout", "patch_size", "augment", "num_workers", "pin_memory", "prefetch", "train", "val")
TRAIN_KEYS = ("dataset", "repeat", "weight")
VAL_KEYS = ("dataset", "limit")


@dataclass
class TaskEntry:
    """One task of a section, as written in the recipe, with what it found."""

    section: str  # "train" or "val"
    name: str
    spec: Any
    repeat: float | None = None
    weight: float | None = None
    limit: int | None = None
    dataset: Any = None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"data.{self.section}.{self.name}"

    @property
    def share(self) -> float:
        if self.weight is not None:
            return float(self.weight)
        return float(self.repeat if self.repeat is not None else 1) * len(self.dataset)


DATA_DEFAULTS: dict[str, Any] = {"root": None, "layout": None, "patch_size": 128, "augment": True,
                                 "num_workers": 0, "pin_memory": None, "prefetch": 2, "train": {}, "val": {}}  # fmt: skip


def _unknown(keys: Any, allowed: tuple[str, ...], where: str, problems: Problems) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.report(f"{where}: unknown key {key!r}{hint} (known: {', '.join(allowed)})", f"{where}.{key}")


def check_data_config(data_cfg: Mapping[str, Any] | None, problems: Problems | None = None) -> dict[str, Any]:
    """The data section with defaults filled in; RecipeError naming the key at fault.

    With a collecting ``problems`` every bad key is reported and left at its default.
    """
    problems = Problems() if problems is None else problems
    if not data_cfg:
        problems.report("the recipe has no 'data' section", "data")
        return dict(DATA_DEFAULTS)
    if not isinstance(data_cfg, Mapping):
        problems.report(f"data must be a mapping, got {type(data_cfg).__name__}", "data")
        return dict(DATA_DEFAULTS)
    _unknown(data_cfg, DATA_KEYS, "data", problems)
    cfg = dict(DATA_DEFAULTS)
    cfg.update({k: v for k, v in data_cfg.items() if v is not None and k in DATA_KEYS})
    for key, least in (("patch_size", 1), ("num_workers", 0), ("prefetch", 1)):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.report(f"data.{key} must be an integer >= {least}, got {value!r}", f"data.{key}")
            cfg[key] = DATA_DEFAULTS[key]
    if not isinstance(cfg["augment"], bool):
        problems.report(f"data.augment must be true or false, got {cfg['augment']!r}", "data.augment")
        cfg["augment"] = DATA_DEFAULTS["augment"]
    if cfg["pin_memory"] is not None and not isinstance(cfg["pin_memory"], bool):
        problems.report(
            f"data.pin_memory must be true, false or null (when training on CUDA), got {cfg['pin_memory']!r}",
            "data.pin_memory",
        )
        cfg["pin_memory"] = None

    if cfg["layout"] is None:
        cfg["layout"] = detect_layout(cfg["root"])
        if cfg["layout"] != "restorekit":
            log.info("data layout: %s (detected under %s)", cfg["layout"], cfg["root"] or ".")
    elif cfg["layout"] not in LAYOUTS:
        problems.report(
            f"data.layout must be one of {', '.join(LAYOUTS)} (or null: detected), got {cfg['layout']!r}", "data.layout"
        )
        cfg["layout"] = detect_layout(cfg["root"])
    for section in ("train", "val"):
        if not isinstance(cfg[section], Mapping):
            problems.report(
                f"data.{section} must map task names to {{dataset: ...}}, got {cfg[section]!r}", f"data.{section}"
            )
            cfg[section] = {}
    return cfg


def _check_dataset_spec(spec: Any, where: str, problems: Problems) -> bool:
    """A dataset spec is a name or a mapping whose ``type`` is a name; say which key is not."""
    if isinstance(spec, str):
        return True
    if not isinstance(spec, Mapping):
        problems.report(
            f"{where} must be a dataset name or a mapping with 'type', got a {type(spec).__name__}: {spec!r}", where
        )
        return False
    if "type" in spec and not isinstance(spec["type"], str):
        problems.report(f"{where}.type must be a dataset name (a string), got {spec['type']!r}", f"{where}.type")
        return False
    return True


def task_entries(cfg: Mapping[str, Any], section: str, problems: Problems | None = None) -> list[TaskEntry]:
    """The entries of ``data.train`` or ``data.val``, checked but not built (a collecting
    ``problems`` gets every bad entry, which is then left out)."""
    problems = Problems() if problems is None else problems
    allowed = TRAIN_KEYS if section == "train" else VAL_KEYS
    entries = []
    for name, entry in cfg[section].items():
        where = f"data.{section}.{name}"
        if not isinstance(entry, Mapping) or "dataset" not in entry:
            problems.report(
                f"{where} must be a mapping with a 'dataset' spec, e.g. {{dataset: {{type: denoise}}}}", where
            )
            continue
        _unknown(entry, allowed, where, problems)
        ok = _check_dataset_spec(entry["dataset"], f"{where}.dataset", problems)
        out = TaskEntry(section, str(name), entry["dataset"])
        for key in ("repeat", "weight"):
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                problems.report(f"{where}.{key} must be a number > 0, got {value!r}", f"{where}.{key}")
                ok, value = False, None
            setattr(out, key, value)
        if out.repeat is not None and out.weight is not None:
            problems.report(f"{where}: give repeat or weight, not both", where)
            ok = False
        limit = entry.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            problems.report(f"{where}.limit must be an integer >= 1, got {limit!r}", f"{where}.limit")
            ok, limit = False, None
        out.limit = limit
        if ok:
            entries.append(out)
    if section == "train":
        uses_weight = {e.weight is not None for e in entries}
        if len(uses_weight) > 1:
            mixed = ", ".join(e.name for e in entries if e.weight is None)
            problems.report(
                f"data.train: some tasks set weight and others ({mixed}) do not; use weight for all or repeat for all",
                "data.train",
            )
    return entries


def build_dataset(
    entry: TaskEntry, root: str | None, layout: str = "restorekit", origin: Any = None, hint: bool = True
) -> Any:
    """Build one task's dataset; the data root and the task name are passed where accepted.

    With PromptIR's or AdaIR's layout a protocol dataset gets the folder and image list
    that repository reads (restorekit.data.layouts); the root is then the repository folder.
    ``origin``: the base recipe the task was inherited from, named when its folder is missing;
    ``hint``: say how to drop inherited tasks then (off for a task the recipe writes itself).
    """
    type_name, kwargs = split_spec("dataset", entry.spec)
    if layout != "restorekit":
        kwargs = layout_kwargs(layout, type_name, kwargs)
        root = root if root is not None else "."
    try:
        names, var_kw = accepted_keywords(registry("dataset").get(type_name))
        if root is not None and "root" not in kwargs and ("root" in names or var_kw):
            kwargs["root"] = root
        if "task" not in kwargs and ("task" in names or var_kw):
            kwargs["task"] = entry.name
        dataset = build("dataset", {"type": type_name, **kwargs})
    except RestorekitError as exc:
        message = f"{entry.where}: {exc}"
        if hint and isinstance(exc, DataError) and "folder not found" in str(exc):
            message += inherited_hint(entry, origin)
        try:
            error = type(exc)(message)
        except TypeError:  # an error class with a richer constructor
            error = RecipeError(message)
        raise error from exc
    if len(dataset) == 0:
        raise DataError(f"{entry.where}: task {entry.name!r} has no images ({type_name})")
    if entry.limit is not None and entry.limit < len(dataset):
        dataset = Subset(dataset, range(entry.limit))
    return dataset


UNKNOWN_ORIGIN = "if this task comes from a base recipe"


def inherited_hint(entry: TaskEntry, origin: Any = None) -> str:
    """How to drop a task a recipe did not mean to keep (tasks of a base recipe are inherited)."""
    where = f"this task comes from the base recipe {origin}" if origin else UNKNOWN_ORIGIN
    return (
        f"; {where} (a recipe's data.{entry.section} adds to its base's tasks): to keep only the tasks your "
        f"recipe lists, write `_replace_: true` under data.{entry.section}, as `restorekit init --pairs` does "
        "(docs/data.md#your-own-pairs)"
    )


def name_origin(message: str, origins: Mapping[str, Any]) -> str:
    """A task error's message (``data.<section>.<task>: ...``) naming the base the task came from."""
    origin = origins.get(message.split(":", 1)[0])
    if origin is None or UNKNOWN_ORIGIN not in message:
        return message
    return message.replace(UNKNOWN_ORIGIN, f"this task comes from the base recipe {origin}", 1)


def build_train_stream(
    data_cfg: Mapping[str, Any],
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> Any:
    """The :class:`~restorekit.data.stream.TrainStream` a data section describes.

    ``pin_memory`` is the default of ``data.pin_memory: null`` (the trainer passes
    True when it trains on CUDA: page-locked batches copy to the GPU asynchronously).
    """
    cfg = check_data_config(data_cfg)
    entries = task_entries(cfg, "train")
    if not entries:
        raise RecipeError("data.train is empty: name at least one task, e.g. derain: {dataset: {type: derain}}")
    for entry in entries:
        entry.dataset = build_dataset(entry, cfg["root"], cfg["layout"])
    total = sum(e.share for e in entries)
    for entry in entries:
        rule = f"weight {entry.weight}" if entry.weight is not None else f"repeat {entry.repeat or 1}"
        log.info(
            "train task %s: %d images, %s -> %.1f%% of samples",
            entry.name,
            len(entry.dataset),
            rule,
            100 * entry.share / total,
        )
    return TrainStream(
        [TaskSource(e.name, e.dataset, e.share) for e in entries],
        batch_size=batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        patch_size=cfg["patch_size"],
        augment=cfg["augment"],
        num_workers=cfg["num_workers"],
        pin_memory=pin_memory if cfg["pin_memory"] is None else cfg["pin_memory"],
        prefetch=cfg["prefetch"],
    )


def build_eval_sets(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Task name -> dataset of full-size (lq, gt) test images, from ``data.val``."""
    cfg = check_data_config(data_cfg)
    sets = {}
    for entry in task_entries(cfg, "val"):
        sets[entry.name] = build_dataset(entry, cfg["root"], cfg["layout"])
        log.info("val task %s: %d images", entry.name, len(sets[entry.name]))
    return sets


def inspect_data(
    data_cfg: Mapping[str, Any], origins: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[TaskEntry]]:
    """Build every task of both sections, keeping each task's error instead of stopping.

    ``origins``: ``data.<section>.<task>`` -> the base recipe it was inherited from, for every
    inherited task (then a task not in it is the recipe's own, and its error gets no hint).
    """
    cfg = check_data_config(data_cfg)
    entries = task_entries(cfg, "train") + task_entries(cfg, "val")
    for entry in entries:
        try:
            origin = (origins or {}).get(entry.where)
            hint = origins is None or origin is not None
            entry.dataset = build_dataset(entry, cfg["root"], cfg["layout"], origin, hint)
        except RestorekitError as exc:
            entry.error = str(exc)
    return cfg, entries
