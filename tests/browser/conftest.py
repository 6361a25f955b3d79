"""Fixtures for the real-browser tests: Debian's ``chromium`` driven by Playwright, plus the web
tests' whole clinic (real WordPress on MariaDB, the Google emulator, the sidecar on real ports).

Playwright's own browser download is never used: the browser is the system's
``/usr/bin/chromium`` and every URL it opens is on 127.0.0.1. When Chromium or Playwright is
missing the tests skip, or fail when ``KCSC_REQUIRE_BROWSER=1`` (CI installs both).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.web_clinic import clinic_factory

__all__ = ["browser", "clinic_factory"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def browser_missing_reason() -> str | None:
    """Why a real-browser test cannot run here, or None when it can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"Debian's chromium is not installed ({CHROMIUM} missing)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def require_browser() -> None:
    """Skip the calling test when no browser is available, or fail when KCSC_REQUIRE_BROWSER=1."""
    reason = browser_missing_reason()
    if reason is None:
        return
    if os.environ.get("KCSC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"KCSC_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless system Chromium (a ``playwright.sync_api.Browser``).

    Playwright gives every launch a fresh throw-away profile directory of its own.
    """
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=CHROMIUM_ARGS, timeout=15_000)
        try:
            yield launched
        finally:
            launched.close()
