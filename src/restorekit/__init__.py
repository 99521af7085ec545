"""restorekit: interchangeable parts for image-restoration models (DINO-IR first).

The public face only; importing it loads no torch-heavy module, no timm, no
open_clip and no plugin.
"""

from restorekit.building import build, build_model, build_part
from restorekit.recipes import load_recipe
from restorekit.registry import register
from restorekit.listing import list_components

__version__ = "0.1.0"
__all__ = ["build", "build_model", "build_part", "load_recipe", "list_components", "register", "__version__"]
