"""Recipes shipped by the example plugin (found through the restorekit.recipes entry point)."""
