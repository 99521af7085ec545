"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download (``playwright install``) is never used: the
executable is the system package (``scripts/setup_env.sh`` installs it when missing),
and every switch that would reach the network is off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    found = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    assert found, (
        "the browser tests need Debian's chromium package: run scripts/setup_env.sh (apt-get install chromium)"
    )
    return found


@contextlib.contextmanager
def browser_page(viewport: tuple[int, int] = (1100, 900)) -> Iterator[tuple[object, list[str]]]:
    """(page, errors seen so far): a fresh headless page, downloads allowed.

    Errors are the console's errors, uncaught exceptions, and every request that
    leaves this machine (it is aborted): a page under test must work offline.
    """
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": viewport[0], "height": viewport[1]})
            # Waits are on elements; the limit only bounds them on a machine shared with other jobs.
            context.set_default_timeout(120_000)
            page = context.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route("**/*", lambda route: _local_only(route, errors))
            yield page, errors
        finally:
            browser.close()


def _local_only(route: object, errors: list[str]) -> None:
    url = route.request.url  # type: ignore[attr-defined]
    if url.startswith(("file:", "data:", "blob:", "http://127.0.0.1", "http://localhost")):
        route.continue_()  # type: ignore[attr-defined]
        return
    errors.append(f"request off this machine: {url}")
    route.abort()  # type: ignore[attr-defined]


def keep_screenshot(shot: Path, name: str) -> None:
    """Copy a test's screenshot to docs/images when ``RESTOREKIT_SCREENSHOTS=1`` (how the docs' images are made)."""
    if os.environ.get("RESTOREKIT_SCREENSHOTS") == "1":
        from PIL import Image

        # 256 colours: a page's screenshot stays legible at a fraction of the size.
        Image.open(shot).convert("RGB").quantize(colors=256).save(
            Path(__file__).resolve().parents[1] / "docs" / "images" / name, optimize=True
        )
