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
    """(page, console errors seen so far): a fresh headless page, downloads allowed."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": viewport[0], "height": viewport[1]})
            page = context.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            browser.close()


def keep_screenshot(shot: Path, name: str) -> None:
    """Copy a test's screenshot to docs/images when ``RESTOREKIT_SCREENSHOTS=1`` (how the docs' images are made)."""
    if os.environ.get("RESTOREKIT_SCREENSHOTS") == "1":
        shutil.copyfile(shot, Path(__file__).resolve().parents[1] / "docs" / "images" / name)
