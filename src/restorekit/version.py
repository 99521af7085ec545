"""The version of restorekit (one place: the package face and the run records read it)."""

__version__ = "0.2.0"  # pyproject.toml reads it ([tool.hatch.version]); CHANGELOG.md
