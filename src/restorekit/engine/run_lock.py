"""One trainer per run folder: ``<run>/train.lock``, held for the whole run.

The lock is an exclusive POSIX record lock (``lockf``) on that file; the file says
who holds it (pid, host, start time, command line) so a refused run can name the
holder. The kernel drops the lock when its process ends, however it ends, so a lock
file whose lock is free was left by a process that died (``kill -9``, a crash): the
next run takes it over and says whose it was. POSIX locks are not inherited by
forked children (DataLoader workers outliving a killed trainer hold nothing), and
NFS serves them from the server, across hosts. A second lock taken by the same
process is refused here (POSIX locks do not conflict within one process). Where the
filesystem has no locks at all, the run goes on unguarded, with a warning. Under
torchrun rank 0 holds the lock for every rank.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restorekit.engine.run_folder import METRICS_FILE, RECIPE_FILE, RUN_FILE
from restorekit.errors import RestorekitError

logger = logging.getLogger(__name__)

LOCK_FILE = "train.lock"
# What a run writes into its folder before its first step: a failed start removes only these.
START_FILES = frozenset({LOCK_FILE, RECIPE_FILE, RUN_FILE, METRICS_FILE})
_HELD_HERE: set[Path] = set()  # lock files this process holds


class RunFolderBusy(RestorekitError):
    """Another live process trains in this run folder; the message names it."""


def _holder(fd: int) -> dict[str, Any]:
    """The record a lock file holds ({} when it is empty or half written)."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def describe_holder(record: dict[str, Any]) -> str:
    if not record:
        return "a process that left no details"
    command = " ".join(map(str, record.get("argv") or []))
    return f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}" + (
        f" ({command})" if command else ""
    )


def busy(run_dir: Path, holder: str) -> RunFolderBusy:
    return RunFolderBusy(
        f"run folder {run_dir} is in use by another training run: {holder}; wait for it "
        f"to end, stop it, or choose another train.out_dir"
    )


def _locked(path: Path) -> int | None:
    """An fd of ``path`` holding its exclusive lock; None when the filesystem has no locks.

    RunFolderBusy when a live process holds it. A holder that releases unlinks the
    file, so a lock won on a file no longer at ``path`` is retried on the new one.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            record = _holder(fd) if exc.errno in (errno.EACCES, errno.EAGAIN) else None
            os.close(fd)
            if record is not None:
                raise busy(path.parent, describe_holder(record)) from None
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return None
            raise
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@dataclass
class RunLock:
    """The held lock of one run folder; :meth:`release` when the run ends."""

    path: Path
    fd: int | None
    created_folder: bool  # the folder did not exist before this run

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Lock ``run_dir`` (created if missing), or RunFolderBusy naming the live holder."""
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        path = (run_dir / LOCK_FILE).resolve()
        if path in _HELD_HERE:
            raise busy(run_dir, f"this process (pid {os.getpid()}) already trains in it")
        fd = _locked(path)
        if fd is None:
            logger.warning(
                "%s: this filesystem has no file locks; nothing stops a second run from "
                "using this folder at the same time",
                run_dir,
            )
            return cls(path, None, created)
        previous = _holder(fd)
        if previous:
            logger.warning(
                "run folder %s: taking over the lock of %s, which is no longer running",
                run_dir,
                describe_holder(previous),
            )
        record = {
            "pid": os.getpid(),
            "host": platform.node(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode("utf-8"))
        os.fsync(fd)
        _HELD_HERE.add(path)
        return cls(path, fd, created)

    def release(self, *, remove_folder: bool = False) -> None:
        """Drop the lock (the file goes too); ``remove_folder`` removes a folder this run created
        when it holds nothing but the run's own start files (a start that failed)."""
        try:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiting run retries on a new file
        finally:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            _HELD_HERE.discard(self.path)
        if remove_folder and self.created_folder:
            remove_if_only(self.path.parent, START_FILES)


def remove_if_only(folder: Path, names: frozenset[str]) -> None:
    """Remove ``folder`` when every entry in it is one of ``names`` (plain files)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    if all(p.name in names and p.is_file() for p in entries):
        shutil.rmtree(folder, ignore_errors=True)
