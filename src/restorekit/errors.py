"""User-facing errors: each message names the file, key, argument or part at fault."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from restorekit.deprecation import deprecated_names


class RestorekitError(Exception):
    """Base class for errors caused by user input (recipes, names, files)."""


class UnknownPartError(RestorekitError, KeyError):
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
    def for_kind(cls, kind: str, hint: str) -> UnknownPartError:
        err = cls.__new__(cls)
        err.kind, err.name, err.close, err.failed = "kind", kind, [], []
        RestorekitError.__init__(err, f"unknown kind of part {kind!r}{hint}")
        return err

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class AmbiguousPartError(RestorekitError):
    """Two plugins claim the same name."""


class DuplicatePartError(RestorekitError):
    """A name is registered twice."""


class PartLoadError(RestorekitError):
    """A part (usually a plugin) could not be imported or is of the wrong kind."""


class BuildError(RestorekitError, TypeError):
    """A spec could not build its part (unexpected keyword, missing type, ...)."""


class RecipeError(RestorekitError, ValueError):
    """A recipe is malformed; the message names the file and the dotted key."""


class CheckpointError(RestorekitError, ValueError):
    """A weights file does not fit; the message names the file and the mismatch."""


class DataError(RestorekitError, ValueError):
    """A dataset cannot be read: missing folder, unmatched pairs, a task with no image."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: its message and, when known, the dotted key at fault."""

    message: str
    key: str | None = None


@dataclass
class Problems:
    """Where a validator reports what is wrong: raise at the first problem, or collect them all.

    Every validator takes one (``problems=None`` means a raising one), so the same code
    serves a build that stops at the first mistake and ``validate`` / ``restorekit
    check``, which report every mistake at once (torchtune's ``ConfigError`` style).
    """

    collect: bool = False
    found: list[Problem] = field(default_factory=list)

    def report(self, message: str, key: str | None = None, error: type[RestorekitError] | None = None) -> None:
        """Raise ``error(message)`` (a RecipeError by default), or record the problem when collecting."""
        if not self.collect:
            raise (error or RecipeError)(message)
        self.found.append(Problem(message, key))

    @contextmanager
    def gather(self, key: str | None = None) -> Iterator[None]:
        """Run a check that raises at its first problem; when collecting, its error becomes one problem."""
        try:
            yield
        except RestorekitError as exc:
            if not self.collect:
                raise
            self.found.append(Problem(str(exc), key))

    def raise_all(self, source: str, locations: Mapping[str, str] | None = None) -> None:
        """One RecipeError listing every problem found (numbered, with file:line when known)."""
        if self.found:
            raise RecipeError(self.message(source, locations))

    def message(self, source: str, locations: Mapping[str, str] | None = None) -> str:
        """``source: N problems:`` then one numbered line per problem, ``(file:line)`` when the key is known.

        A single problem reads as the validator that found it words it alone.
        """
        locations = locations or {}
        found = self.found
        if len(found) == 1:
            where = _location(found[0].key, locations)
            return found[0].message + (f" ({where})" if where else "")
        lines = [f"{source}: {len(found)} problem{'s' if len(found) != 1 else ''}:"]
        for number, problem in enumerate(found, 1):
            text = problem.message.removeprefix(f"{source}: ")
            where = _location(problem.key, locations)
            lines.append(f"  {number}. {text}" + (f" ({where})" if where else ""))
        return "\n".join(lines)


def _location(key: str | None, locations: Mapping[str, str]) -> str | None:
    """file:line of ``key``, else of the nearest enclosing key the loader saw."""
    while key:
        if key in locations:
            return locations[key]
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else None
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class TrainingInterrupted(RestorekitError):
    """The run stopped on a signal after writing a checkpoint; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


# Renamed in 0.2 ("part", the library's one word for a registered piece); removed in 0.3.
__getattr__ = deprecated_names(
    __name__,
    {
        "UnknownComponentError": ("UnknownPartError", UnknownPartError),
        "AmbiguousComponentError": ("AmbiguousPartError", AmbiguousPartError),
        "DuplicateComponentError": ("DuplicatePartError", DuplicatePartError),
        "ComponentLoadError": ("PartLoadError", PartLoadError),
    },
)
