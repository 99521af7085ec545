"""Example restorekit plugin (see docs/plugins.md)."""
