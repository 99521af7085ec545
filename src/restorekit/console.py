"""How the command line shows the library's log: one handler, configured by the CLI only.

The library logs through ``logging.getLogger(__name__)`` in each module and never
prints; :func:`configure` (called by ``restorekit`` with ``-v``/``-q``) sends those
records to stderr, through ``tqdm.write`` so a progress bar is never torn apart.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from tqdm import tqdm

ROOT = "restorekit"


class TqdmHandler(logging.Handler):
    """Writes each record on its own line above any live tqdm bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class PlainFormatter(logging.Formatter):
    """``message`` for information, ``WARNING: message`` above it, ``debug [module]: message`` below."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname}: {text}"
        if record.levelno < logging.INFO:
            return f"debug [{record.name}]: {text}"
        return text


def _warning_to_log(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: object = None, line: str | None = None) -> None:  # fmt: skip
    """Python warnings as one clean log line (no source excerpt); debug shows where they came from."""
    logger = logging.getLogger(ROOT)
    logger.warning("%s", message)
    logger.debug("(%s at %s:%d)", category.__name__, filename, lineno)


def configure(verbosity: int = 0) -> None:
    """Show restorekit's log on stderr: -q (-1) warnings only, 0 information, -v (1) debug too.

    Python warnings (a warmup shortened, a randomly initialised backbone) become log lines too.
    Under a launcher (torchrun, SLURM) only global rank 0 shows information and warnings:
    the other ranks would repeat its lines once per process; their errors still show.
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    if int(os.environ.get("RANK", "0")) > 0:
        level = logging.ERROR
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, TqdmHandler)]:
        logger.removeHandler(handler)
    handler = TqdmHandler()
    handler.setFormatter(PlainFormatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    warnings.showwarning = _warning_to_log
