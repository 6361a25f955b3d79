"""The admin page in a real browser: an administrator, logged in by a cookie WordPress minted,
connects a doctor through the emulator's consent page and sees the status change.

Screenshots of the page before and after connecting are kept in ``artifacts/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.web.web_clinic import Clinic

pytestmark = [pytest.mark.browser, pytest.mark.php]

TOKEN_META = "google_meet_access_token"
EMAIL = "doc.two@gmail.test"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def clinic(clinic_factory: Any) -> Clinic:
    return clinic_factory()


def console_error(message: Any) -> bool:
    """A console error the user could notice; the browser's own favicon probe does not count."""
    return bool(message.type == "error"
                and not message.location.get("url", "").endswith("/favicon.ico"))


def test_admin_connects_a_doctor_in_a_real_browser(browser: Any, clinic: Clinic) -> None:
    from playwright.sync_api import expect  # importable: the browser fixture checked

    doctor = clinic.ids["doc_two"]
    others = [clinic.ids["doc_one"], clinic.ids["doc_three"]]
    context = browser.new_context(viewport={"width": 1100, "height": 520})
    context.add_cookies([{"name": clinic.cookie_name, "value": clinic.cookies["admin"],
                          "url": clinic.sidecar.url + "/"}])
    page = context.new_page()
    page.set_default_timeout(5_000)
    hosts: set[str] = set()
    problems: list[str] = []
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    page.on("console", lambda msg: problems.append(msg.text) if console_error(msg) else None)
    page.on("pageerror", lambda err: problems.append(str(err)))
    ARTIFACTS.mkdir(exist_ok=True)

    try:
        page.goto(clinic.url("/admin"))
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "Doctors' Google Calendar connections")
        row = page.locator(f'[data-testid="doctor-row"][data-doctor="{doctor}"]')
        expect(row).to_have_attribute("data-status", "not_connected")
        expect(row.get_by_test_id("status")).to_have_text("Not connected")
        assert page.evaluate(  # the stylesheet arrived and was not blocked
            "[...document.styleSheets].map(sheet => sheet.cssRules.length > 0)") == [True]
        page.screenshot(path=str(ARTIFACTS / "admin-page-before.png"), full_page=True)

        row.get_by_test_id("connect").click()
        page.wait_for_url(clinic.emulator.url + "/o/oauth2/v2/auth?**")
        page.locator('input[name="email"]').fill(EMAIL)
        page.locator('button[name="decision"][value="approve"]').click()
        page.wait_for_url(clinic.url("/admin"))

        expect(row).to_have_attribute("data-status", "connected")
        expect(row.get_by_test_id("status")).to_have_text("Connected")
        expect(row.get_by_test_id("google-email")).to_have_text(EMAIL)
        expect(row.get_by_test_id("connect")).to_have_text("Reconnect")
        for other in others:
            expect(page.locator(f'[data-testid="doctor-row"][data-doctor="{other}"]')
                   ).to_have_attribute("data-status", "not_connected")
        page.screenshot(path=str(ARTIFACTS / "admin-page.png"), full_page=True)
        html = page.content()
    finally:
        context.close()

    token = json.loads(clinic.meta(doctor, TOKEN_META))  # what the Meet add-on's PHP reads
    assert token["access_token"] and token["refresh_token"]
    assert token["access_token"] not in html and token["refresh_token"] not in html
    assert problems == []  # no script error, no blocked stylesheet (CSP) on either page
    assert hosts == {urlsplit(clinic.sidecar.url).netloc, urlsplit(clinic.emulator.url).netloc}
