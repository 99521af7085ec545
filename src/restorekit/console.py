"""How the command line shows the library's log: one handler, configured by the CLI only.

The library logs through ``logging.getLogger(__name__)`` in each module and never
prints; :func:`configure` (called by ``restorekit`` with ``-v``/``-q``) sends those
records to stderr, through ``tqdm.write`` so a progress bar is never torn apart.
"""

from __future__ import annotations

import logging
import sys

ROOT = "restorekit"


class TqdmHandler(logging.Handler):
    """Writes each record on its own line above any live tqdm bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

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


def configure(verbosity: int = 0) -> None:
    """Show restorekit's log on stderr: -q (-1) warnings only, 0 information, -v (1) debug too."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, TqdmHandler)]:
        logger.removeHandler(handler)
    handler = TqdmHandler()
    handler.setFormatter(PlainFormatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
