"""``restorekit report RUN...``: one self-contained HTML page (and its markdown twin) comparing runs.

:mod:`restorekit.report.runs` reads run folders, :mod:`restorekit.report.svg` draws
the curves, :mod:`restorekit.report.render` writes the page.
"""
