"""User-facing errors: each message names the file, key, argument or part at fault."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RestorekitError(Exception):
    """Base class for errors caused by user input (recipes, names, files)."""


class UnknownComponentError(RestorekitError, KeyError):
    """An unknown part name (or kind), with close matches and failed plugins."""

    def __init__(self, kind: str, name: str, close: Sequence[str] = (), failed: Sequence[Any] = ()) -> None:
        self.kind, self.name, self.close, self.failed = kind, name, list(close), list(failed)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {' or '.join(map(repr, close))}?"
        if failed:
            msg += "; plugins that failed to load: " + "; ".join(
                f"{e.name} from {e.source} ({e.entry_point}): {e.error}" for e in failed
            )
        msg += f" (see `restorekit list {kind}`)"
        super().__init__(msg)

    @classmethod
    def for_kind(cls, kind: str, hint: str) -> UnknownComponentError:
        err = cls.__new__(cls)
        err.kind, err.name, err.close, err.failed = "kind", kind, [], []
        RestorekitError.__init__(err, f"unknown kind of part {kind!r}{hint}")
        return err

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class AmbiguousComponentError(RestorekitError):
    """Two plugins claim the same name."""


class DuplicateComponentError(RestorekitError):
    """A name is registered twice."""


class ComponentLoadError(RestorekitError):
    """A part (usually a plugin) could not be imported or is of the wrong kind."""


class BuildError(RestorekitError, TypeError):
    """A spec could not build its part (unexpected keyword, missing type, ...)."""


class RecipeError(RestorekitError, ValueError):
    """A recipe is malformed; the message names the file and the dotted key."""


class CheckpointError(RestorekitError, ValueError):
    """A weights file does not fit; the message names the file and the mismatch."""


class DataError(RestorekitError, ValueError):
    """A dataset cannot be read: missing folder, unmatched pairs, a task with no image."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
