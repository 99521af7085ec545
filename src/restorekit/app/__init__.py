"""``restorekit app``: restore images in the browser with trained models (the extra ``restorekit[app]``).

:mod:`restorekit.app.session` loads the models and restores uploads through the
restore command's own code path (no Gradio there); :mod:`restorekit.app.ui` is the
Gradio page. Nothing here is imported by ``import restorekit``.
"""
