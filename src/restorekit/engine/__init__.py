"""The engine: training loop, checkpoints, evaluation and tiled inference.

Importing this package is light; each module imports torch itself. Entry points:
``restorekit.engine.train.train`` (the loop), ``restorekit.engine.evaluate.evaluate``,
``restorekit.engine.infer.restore_tensor`` and the commands ``restorekit train|eval|restore``.
"""
