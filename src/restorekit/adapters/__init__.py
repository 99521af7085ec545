"""Adapters: bring a fused guide map into a body at one injection point (``dino_restore``).

Kept light: the part modules are imported by the registry when built.
"""
