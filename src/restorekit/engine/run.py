"""A run's folder: which one, locked for this run, where it resumes from, its start files.

The lock comes before anything in the folder is looked at or changed (leftovers
cleaned, defective checkpoints set aside), so two runs never work on one folder. A
start that fails before the first step removes a folder it created (it holds nothing
but the start files). Only rank 0 touches the folder; the others learn its name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from restorekit.engine import checkpoint as ckpt
from restorekit.engine import distributed as dist_utils
from restorekit.engine.config import TrainConfig
from restorekit.engine.distributed import DistContext
from restorekit.engine.run_folder import (
    METRICS_FILE,
    RECIPE_FILE,
    RUN_STAMP_PATTERN,
    MetricsLog,
    default_run_dir,
    write_run_files,
)
from restorekit.engine.run_lock import RunLock
from restorekit.errors import CheckpointError
from restorekit.recipes import is_missing, load_yaml, recipe_diff

logger = logging.getLogger(__name__)


def recipe_name(recipe: Mapping[str, Any], source: str) -> str:
    name = recipe.get("name") or Path(str(source)).stem or "run"
    return str(name).replace("/", "_")


class Run:
    """One run's folder: :meth:`open` chooses and locks it, :meth:`close` lets it go."""

    def __init__(self, recipe: Mapping[str, Any], cfg: TrainConfig, ctx: DistContext, source: str) -> None:
        self.recipe, self.cfg, self.ctx, self.source = recipe, cfg, ctx, source
        self.lock: RunLock | None = None
        self.run_dir = Path()
        self.resume_from: Path | None = None  # the checkpoint to continue from; None: a fresh start
        self.started = False  # the first step may run: close() keeps the folder

    def open(self, resume: str | None) -> Path:
        """Choose and lock the folder (rank 0) and find the resume point; every rank learns both."""
        run_dir, resume_from = dist_utils.on_main(self.ctx, self._open_here, resume)
        self.run_dir = Path(run_dir)
        self.resume_from = Path(resume_from) if resume_from is not None else None
        return self.run_dir

    def close(self) -> None:
        """Release the lock; a run that never started leaves no folder it created."""
        if self.lock is not None:
            self.lock.release(remove_folder=not self.started)
            self.lock = None

    def _open_here(self, resume: str | None) -> tuple[Path, Path | None]:
        run_dir, named = self.pick_run_dir(resume)
        self.lock = RunLock.acquire(run_dir)
        try:
            return run_dir, self._resume_point(run_dir, resume, named)
        except BaseException:
            self.lock.release(remove_folder=True)
            self.lock = None
            raise

    def pick_run_dir(self, resume: str | None) -> tuple[Path, Path | None]:
        """(run folder, the checkpoint folder --resume named, if it named one); changes nothing."""
        name = recipe_name(self.recipe, self.source)
        if resume not in (None, "auto"):
            path = Path(resume).resolve()  # 'ckpt-00000004' typed inside checkpoints/ has a parent too
            if path.is_dir() and ckpt.is_checkpoint_name(path.name):
                return path.parent.parent, path
            if path.is_dir():
                return path, None
            raise CheckpointError(f"--resume {resume}: no such run or checkpoint folder")
        if self.cfg.out_dir:
            return Path(self.cfg.out_dir), None
        if resume == "auto":
            # Only this recipe's own folders: 'exp-<stamp>', never 'exp-lr2-<stamp>'.
            own = re.compile(re.escape(name) + RUN_STAMP_PATTERN)
            candidates = sorted(
                (p for p in Path("runs").glob(f"{name}-*") if own.fullmatch(p.name)), key=lambda p: p.stat().st_mtime
            )
            with_ckpts = [p for p in candidates if ckpt.list_checkpoints(p)]
            return (with_ckpts[-1] if with_ckpts else default_run_dir(name)), None
        return default_run_dir(name), None

    def _resume_point(self, run_dir: Path, resume: str | None, named: Path | None) -> Path | None:
        """The checkpoint to continue from (None: a fresh start), checked against the folder."""
        if named is not None:
            newer = [p.name for s, p in ckpt.list_checkpoints(run_dir) if p.name > named.name]
            if newer:
                raise CheckpointError(
                    f"--resume {named}: its run folder holds newer checkpoints ({', '.join(newer)}) that "
                    f"continuing from it would overwrite; copy it into a new run folder, or delete them"
                )
            return named
        if resume is None:
            if ckpt.list_checkpoints(run_dir):
                raise CheckpointError(
                    f"run folder {run_dir} already holds checkpoints; pass --resume auto to continue "
                    f"it or choose another train.out_dir"
                )
            return None
        ckpt.clean_incomplete(run_dir)
        # A checkpoint without an EMA is not defective (EMA may have been switched on since):
        # loading starts the average from its weights instead of setting the checkpoint aside.
        found = ckpt.latest_valid(run_dir)
        if found is None and resume != "auto":
            raise CheckpointError(f"--resume {run_dir}: no valid checkpoint in {run_dir / ckpt.CKPT_DIR}")
        return found.path if found else None

    def write_start_files(self, start: int, info: Mapping[str, Any]) -> None:
        """On rank 0: drop the log past ``start``, say what changed since the run began, write the run files.

        The log reads as one run: lines past the checkpoint, or all lines of a run that
        died before its first checkpoint (start 0), belong to no weights that exist.
        """
        MetricsLog(self.run_dir / METRICS_FILE).truncate_after(start)
        if self.resume_from is not None:
            ckpt.forget_best_after(self.run_dir, start)
            logger.info("resuming %s from step %d (%s)", self.run_dir, start, self.resume_from)
            self.say_recipe_changes()
        write_run_files(self.run_dir, self.recipe, {"source": self.source, **info})
        logger.info("run folder: %s", self.run_dir)

    def say_recipe_changes(self) -> None:
        """One line per recipe key that differs from the ``recipe.yaml`` the run started with."""

        def show(value: Any) -> str:
            return "(absent)" if is_missing(value) else repr(value)

        saved = self.run_dir / RECIPE_FILE
        if not saved.is_file():
            return
        changes = [row for row in recipe_diff(load_yaml(saved), self.recipe) if row[0] != "train.out_dir"]
        for key, before, after in changes:
            logger.info("recipe changed since the run started: %s: %s -> %s", key, show(before), show(after))
