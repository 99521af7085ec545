"""Models: complete restoration networks that wire parts together (``dino_ir``).

Kept light: the model modules are imported by the registry when built.
"""
