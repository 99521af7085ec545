"""Restoration bodies: the U-Net style networks that guidance is injected into.

``restormer`` and ``promptir`` reproduce the official architectures with the
official parameter names, so released checkpoints load as they are. Shared
building blocks live in :mod:`restorekit.bodies.blocks`. This module stays light:
the bodies themselves are imported only when built (see ``catalog.py``).
"""

from restorekit.bodies.points import InjectionPoint

__all__ = ["InjectionPoint"]
