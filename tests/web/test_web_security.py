"""Attacks and bad input against the web layer over real HTTP: every one is a precise 4xx and
changes nothing in WordPress's user meta."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from web_clinic import SITE_URL, Clinic, approve_at_emulator, csrf_from, query_of

from sidecar.web import create_app
from sidecar.web.security import safe_return_url

pytestmark = pytest.mark.php


@pytest.fixture(scope="module")
def clinic(clinic_factory: Any) -> Clinic:
    clinic = clinic_factory()
    clinic.add_stale_cookies()
    return clinic


def snapshot(clinic: Clinic) -> dict[int, dict[str, str]]:
    return {uid: clinic.usermeta_rows(uid) for uid in clinic.ids.values()}


def start(clinic: Clinic, browser: requests.Session, query: str = "") -> str:
    first = browser.get(clinic.url("/connect" + query), allow_redirects=False)
    assert first.status_code == 302, first.text
    return first.headers["Location"]


def with_state(callback: str, state: str) -> str:
    parts = urlsplit(callback)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    params["state"] = state
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{query}"


# -- who is asking ---------------------------------------------------------------------------


@pytest.mark.parametrize("cookie", [None, "forged", "expired", "logged_out"])
def test_connect_needs_a_live_wordpress_login(clinic: Clinic, cookie: str | None) -> None:
    value = {
        None: None,
        "forged": clinic.cookies["doc_one"][:-2] + ("00" if clinic.cookies["doc_one"][-2:] != "00"
                                                    else "11"),
        "expired": clinic.extra.get("expired"),
        "logged_out": clinic.extra.get("logged_out"),
    }[cookie]
    answer = clinic.browser(cookie=value).get(clinic.url("/connect"), allow_redirects=False)
    assert answer.status_code == 401
    login = f"{SITE_URL}/wp-login.php?redirect_to={quote(clinic.url('/connect'), safe='')}"
    assert f'href="{login}"' in answer.text.replace("&amp;", "&")


@pytest.mark.parametrize(("login", "target", "status"), [
    ("pat", None, 403),            # a patient is no doctor
    ("pat", "doc_one", 403),       # ... and may not connect one
    ("doc_one", "doc_two", 403),   # a doctor only manages themselves
    ("clinicboss", "doc_three", 403),  # not in the clinic boss's clinic
    ("admin", "pat", 404),         # administrators: any doctor, but a patient is not one
])
def test_connect_is_refused_without_the_right_to_manage(clinic: Clinic, login: str,
                                                        target: str | None, status: int) -> None:
    query = f"?doctor={clinic.ids[target]}" if target else ""
    answer = clinic.browser(login).get(clinic.url("/connect" + query), allow_redirects=False)
    assert answer.status_code == status
    assert "Location" not in answer.headers


def test_clinic_admin_may_connect_a_doctor_of_their_clinic(clinic: Clinic) -> None:
    auth_url = start(clinic, clinic.browser("clinicboss"), f"?doctor={clinic.ids['doc_one']}")
    assert auth_url.startswith(clinic.emulator.url)


def test_me_and_admin_pages_by_role(clinic: Clinic) -> None:
    assert clinic.browser("pat").get(clinic.url("/me")).status_code == 403
    assert clinic.browser("pat").get(clinic.url("/admin")).status_code == 403
    redirect = clinic.browser("admin").get(clinic.url("/me"), allow_redirects=False)
    assert redirect.status_code == 303 and redirect.headers["Location"] == clinic.url("/admin")
    boss = clinic.browser("clinicboss").get(clinic.url("/admin"))
    assert boss.status_code == 200
    assert "Doc_One" in boss.text and "Doc_Two" in boss.text and "Doc_Three" not in boss.text
    assert clinic.browser().get(clinic.url("/admin")).status_code == 401


# -- the OAuth state -------------------------------------------------------------------------


def test_tampered_state_is_refused(clinic: Clinic) -> None:
    browser = clinic.browser("doc_one")
    callback = approve_at_emulator(start(clinic, browser), "x@gmail.test")
    state = query_of(callback)["state"]
    payload, mac = state.split(".")
    before = snapshot(clinic)
    for bad in (payload + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"),
                payload[:-2] + "." + mac, "garbage", "a" * 3000):
        answer = browser.get(with_state(callback, bad), allow_redirects=False)
        assert answer.status_code in (400, 414), bad
    assert snapshot(clinic) == before


def test_state_expires_after_ten_minutes(clinic: Clinic) -> None:
    browser = clinic.browser("doc_two")
    callback = approve_at_emulator(start(clinic, browser), "y@gmail.test")
    before = snapshot(clinic)
    clinic.clock.advance(601)
    answer = browser.get(callback, allow_redirects=False)
    assert answer.status_code == 400 and "expired" in answer.text
    assert snapshot(clinic) == before


def test_state_of_another_user_or_browser_is_refused(clinic: Clinic) -> None:
    victim = clinic.browser("doc_one")
    callback = approve_at_emulator(start(clinic, victim), "z@gmail.test")
    before = snapshot(clinic)

    other_user = clinic.browser("doc_two")
    other_user.cookies.set("kcsc_flow", victim.cookies.get("kcsc_flow"), domain="127.0.0.1",
                           path="/kc-sidecar")
    answer = other_user.get(callback, allow_redirects=False)
    assert answer.status_code == 400 and "different WordPress user" in answer.text

    other_browser = clinic.browser("doc_one")  # same user, but no flow cookie of this flow
    answer = other_browser.get(callback, allow_redirects=False)
    assert answer.status_code == 400 and "another browser" in answer.text
    assert snapshot(clinic) == before


def test_callback_without_state_or_code(clinic: Clinic) -> None:
    browser = clinic.browser("doc_one")
    assert browser.get(clinic.url("/oauth/callback?code=abc")).status_code == 400
    callback = approve_at_emulator(start(clinic, browser), "q@gmail.test")
    state = query_of(callback)["state"]
    answer = browser.get(clinic.url("/oauth/callback"), params={"state": state})
    assert answer.status_code == 400 and "authorization code" in answer.text


# -- CSRF --------------------------------------------------------------------------------------


def test_disconnect_requires_a_csrf_token_of_this_session(clinic: Clinic) -> None:
    doctor = clinic.ids["doc_two"]
    browser = clinic.browser("doc_two")
    assert clinic.connect(browser, email="d2@gmail.test").status_code == 303
    token = csrf_from(browser.get(clinic.url("/me")).text)
    other = clinic.browser("doc_one")
    foreign_token = csrf_from(other.get(clinic.url("/admin")).text)
    before = snapshot(clinic)
    form = {"doctor": str(doctor)}

    attempts = [
        (browser, form, {}),                                          # no token
        (browser, {**form, "csrf_token": foreign_token}, {}),         # another session's token
        (browser, {**form, "csrf_token": token + "x"}, {}),           # altered token
        (browser, {**form, "csrf_token": token}, {"Origin": "https://evil.test"}),
        (browser, {**form, "csrf_token": token}, {"Sec-Fetch-Site": "cross-site"}),
        (clinic.browser("doc_two"), {**form, "csrf_token": token}, {}),  # no CSRF cookie
        (other, {**form, "csrf_token": foreign_token}, {}),           # doc_one for doc_two
    ]
    for session, data, headers in attempts:
        answer = session.post(clinic.url("/disconnect"), data=data, headers=headers,
                              allow_redirects=False)
        assert answer.status_code == 403, (data, headers, answer.text)
    assert snapshot(clinic) == before
    assert clinic.usermeta_rows(doctor)["kiviCare_google_meet_connect"] == "on"


# -- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "https://evil.test/wp-admin/",
    "//evil.test/wp-admin/",
    "http://clinic.test.evil.test/wp-admin/",
    "http://clinic.test@evil.test/wp-admin/",
    "http://evil.test\\@clinic.test/wp-admin/",
    "http://clinic.test/wp-admin/../../elsewhere",
    "http://clinic.test/wp-admin/%2e%2e/x",
    "https://clinic.test/wp-admin/",   # other scheme is another origin
    "http://clinic.test/wp-login.php",
    "javascript:alert(1)",
    "/wp-admin/",
])
def test_return_outside_wordpress_admin_is_refused(clinic: Clinic, target: str) -> None:
    assert safe_return_url(target, SITE_URL) is None
    answer = clinic.browser("doc_one").get(clinic.url("/connect"), params={"return": target},
                                           allow_redirects=False)
    assert answer.status_code == 400


def test_return_into_wordpress_admin_is_allowed() -> None:
    good = SITE_URL + "/wp-admin/admin.php?page=kivicare"
    assert safe_return_url(good, SITE_URL) == good
    assert safe_return_url(good, SITE_URL + "/") == good


# -- bad input and limits ------------------------------------------------------------------------


def test_bad_input_gets_precise_4xx(clinic: Clinic) -> None:
    doc = clinic.browser("doc_one")
    cases = [
        (doc.get(clinic.url("/connect?doctor=abc")), 400, "positive whole number"),
        (doc.get(clinic.url("/connect?doctor=-1")), 400, "positive whole number"),
        (doc.get(clinic.url("/connect?doctor=" + "9" * 40)), 400, "positive whole number"),
        (doc.get(clinic.url("/me?x=" + "a" * 5000)), 414, "query string"),
        (doc.get(clinic.url("/me"), headers={"X-Junk": "a" * 20000}), 431, "headers"),
        (doc.post(clinic.url("/disconnect"), data={"x": "a" * 20000}), 413, "larger"),
        (doc.get(clinic.url("/disconnect")), 405, "not allowed"),
        (doc.get(clinic.url("/nope")), 404, "not found"),
        (doc.get(clinic.url("/invite/not-a-token")), 400, "malformed"),
        (doc.post(clinic.url("/webhook/google")), 400, "missing x-goog"),
    ]
    for answer, status, words in cases:
        assert answer.status_code == status, (answer.url[:80], answer.text[:300])
        assert words in answer.text.lower(), (answer.url[:80], answer.text[:300])


def test_security_headers_on_pages(clinic: Clinic) -> None:
    answer = clinic.browser("doc_one").get(clinic.url("/me"))
    assert answer.status_code == 200
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "<script" not in answer.text and "style=" not in answer.text


def test_pages_escape_what_wordpress_users_typed(clinic: Clinic) -> None:
    # display_name is user-controlled in WordPress
    with clinic.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE wp_users SET display_name = %s WHERE ID = %s",
                             ("<script>alert(1)</script>", clinic.ids["doc_three"]))
    answer = clinic.browser("admin").get(clinic.url("/admin"))
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text


def test_unexpected_error_is_a_plain_500_that_is_logged(clinic: Clinic, caplog: Any) -> None:
    app = create_app(clinic.runtime)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("internal detail 5f3a")

    answer = app.test_client().get("/boom")
    assert answer.status_code == 500
    assert b"5f3a" not in answer.data and b"Traceback" not in answer.data
    assert "internal detail 5f3a" in caplog.text


# -- operations ----------------------------------------------------------------------------------


def test_health_readiness_and_metrics(clinic: Clinic) -> None:
    assert requests.get(clinic.url("/healthz"), timeout=5).json() == {"status": "ok"}
    ready = requests.get(clinic.url("/readyz"), timeout=5)
    assert ready.status_code == 200, ready.text
    clinic.runtime.add_readiness("scheduler", lambda: "scheduler not running")
    try:
        down = requests.get(clinic.url("/readyz"), timeout=5)
        assert down.status_code == 503
        assert down.json()["problems"] == {"scheduler": "scheduler not running"}
    finally:
        del clinic.runtime.readiness_checks["scheduler"]
    metrics = requests.get(clinic.url("/metrics"), timeout=5)
    assert metrics.status_code == 200 and "kcsc_" in metrics.text
    # without the prefix (a proxy that strips it) the same routes answer
    assert requests.get(clinic.sidecar.url + "/healthz", timeout=5).status_code == 200
