"""Losses: ``forward(restored, target, *, lq=None, aux=None) -> scalar``.

Pixel losses and their weighted sum live in :mod:`.pixel`, the DINO perception
contrastive loss in :mod:`.dpc`. Kept light: imported by the registry when built.
"""
