"""Frozen feature backbones: any timm ViT (``timm``; ``dinov2`` is its DINOv2
defaults, DINOv3 works too) and open_clip image towers (``clip``).

Light on purpose: the classes live in ``base``, ``timm_vit`` and ``clip`` and are
imported when a backbone is built (``restorekit.build("backbone", "dinov2")``).
"""

__all__ = ["base", "clip", "timm_vit", "weights"]
