"""Fusions: many backbone layer maps -> one guide map (``msf``, ``concat``).

Kept light: the part modules are imported by the registry when built.
"""
