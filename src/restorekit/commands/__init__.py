"""Subcommands of the ``restorekit`` command line, one module each."""
