"""What a connect attempt leaves behind, over real HTTP: the Google account's e-mail on the pages
(read from the primary calendar with the new token, best effort), a consent that leaves the
calendar scope unticked (nothing stored, grant revoked), and the connect/disconnect counters in
``/metrics``."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from web_clinic import Clinic, approve_at_emulator, csrf_from, query_of

pytestmark = pytest.mark.php

CAL = "https://www.googleapis.com/auth/calendar"
EMU_CLIENT = "clinic-client.apps.googleusercontent.com"


@pytest.fixture(scope="module")
def clinic(clinic_factory: Any) -> Clinic:
    return clinic_factory()


def admin_row(clinic: Clinic, login: str) -> str:
    listing = clinic.browser("admin").get(clinic.url("/admin"))
    assert listing.status_code == 200
    row = re.search(rf"{login.title()}.*?</tr>", listing.text, re.S | re.I)
    assert row, listing.text
    return row.group(0)


def counters(clinic: Clinic) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(clinic.url("/metrics"), timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name in ("kcsc_oauth_connections_total", "kcsc_disconnections_total")}


def outcome(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("kcsc_oauth_connections_total", (("outcome", name),))


def approve_with_scopes(authorization_url: str, email: str, granted: list[str]) -> str:
    """Google's granular consent: the doctor ticks only ``granted``; the callback URL."""
    form: dict[str, Any] = {**query_of(authorization_url), "email": email,
                            "granted_scope": granted, "scopes_selected": "1"}
    approve = authorization_url.split("/o/oauth2/v2/auth?")[0] + "/o/oauth2/v2/auth/approve"
    answer = requests.post(approve, data=form, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


# -- the Google account's e-mail ---------------------------------------------------------------


def test_pages_show_the_connected_google_account(clinic: Clinic) -> None:
    browser = clinic.browser("doc_one")
    done = clinic.connect(browser, email="Doc.One@Gmail.test")
    assert done.status_code == 303, done.text

    # read once, with the new token, as the account itself (Google lower-cases the address)
    [lookup] = clinic.emulator.app.emulator.requests("calendar.calendars.get")
    assert (lookup["user"], lookup["status"], lookup["path"]) == (
        "doc.one@gmail.test", 200, "/calendar/v3/calendars/primary")
    assert "doc.one@gmail.test" in admin_row(clinic, "doc_one")
    me = browser.get(clinic.url("/me"))
    assert "as <strong>doc.one@gmail.test</strong>" in me.text


def test_email_lookup_failure_does_not_block_connecting(clinic: Clinic,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    doctor = clinic.ids["doc_two"]
    browser = clinic.browser("doc_two")
    assert clinic.connect(browser, email="first@gmail.test").status_code == 303
    assert "first@gmail.test" in admin_row(clinic, "doc_two")

    # Reconnecting with another account while Google fails the calendar read: connected anyway,
    # and the old address (another account's) is not shown any more.
    clinic.emulator.app.emulator.inject_faults("calendar.calendars.get", ["backendError"])
    with caplog.at_level(logging.WARNING, logger="sidecar.web.connect_flow"):
        done = clinic.connect(browser, email="second@gmail.test")
    assert done.status_code == 303, done.text
    assert clinic.usermeta_rows(doctor)["kiviCare_google_meet_connect"] == "on"
    row = admin_row(clinic, "doc_two")
    assert "Connected" in row and "first@gmail.test" not in row and "—" in row
    assert "reading the Google account's e-mail failed (Transient" in caplog.text
    # one attempt only: a browser is waiting
    failed = [r for r in clinic.emulator.app.emulator.requests("calendar.calendars.get")
              if r["user"] == "second@gmail.test"]
    assert [r["status"] for r in failed] == [500]


# -- the calendar scope not granted ------------------------------------------------------------
#
# The sidecar asks for the one scope ``calendar``, so Google's consent is all or nothing there:
# unticking it grants nothing and comes back as ``access_denied``. A grant *without* the calendar
# scope reaches the callback when the authorization request was altered on its way through the
# browser (the scope parameter edited, an extension, a proxy), possibly with granular consent on
# several scopes. The state still verifies, so only the scope check stands in the way.


def with_scope(authorization_url: str, scope: str) -> str:
    return authorization_url.replace("scope=" + quote(CAL, safe=""), "scope=" + quote(scope))


@pytest.mark.parametrize(("requested", "granted"), [
    (CAL + ".readonly", [CAL + ".readonly"]),
    (CAL + ".events", [CAL + ".events"]),
    (f"{CAL}.events {CAL}", [CAL + ".events"]),  # granular consent: calendar left unticked
], ids=["readonly", "events", "events-of-two"])
def test_a_grant_without_the_calendar_scope_stores_nothing(clinic: Clinic, requested: str,
                                                          granted: list[str]) -> None:
    doctor = clinic.ids["doc_one"]
    email = f"narrow{len(requested)}@gmail.test"
    emulator = clinic.emulator.app.emulator
    browser = clinic.browser("doc_one")
    if clinic.usermeta_rows(doctor).get("kiviCare_google_meet_connect") != "on":
        # a reconnect attempt: connect first unless an earlier test in this worker did
        assert clinic.connect(browser, email="doc.one@gmail.test").status_code == 303
    before = clinic.usermeta_rows(doctor)
    assert before["kiviCare_google_meet_connect"] == "on"
    lookups = len(emulator.requests("calendar.calendars.get"))
    revokes = len(emulator.requests("oauth2.revoke"))
    count = counters(clinic)[outcome("scope_missing")]

    first = browser.get(clinic.url("/connect"), allow_redirects=False)
    callback = approve_with_scopes(with_scope(first.headers["Location"], requested), email,
                                   granted)
    assert query_of(callback)["scope"].split() == granted
    answer = browser.get(callback, allow_redirects=False)

    assert answer.status_code == 400
    assert "Calendar access was not granted" in answer.text
    assert "without access to Google Calendar" in answer.text
    assert "Nothing was stored" in answer.text
    assert clinic.usermeta_rows(doctor) == before  # old token and flag untouched
    # the narrow grant was revoked at Google: it is gone from the accounts server
    assert [r["status"] for r in emulator.requests("oauth2.revoke")[revokes:]] == [200]
    assert [g for g in emulator.dump()["grants"] if g["email"] == email] == []
    assert len(emulator.requests("calendar.calendars.get")) == lookups  # no call with it
    assert counters(clinic)[outcome("scope_missing")] == count + 1


def test_unticking_the_only_scope_is_a_refusal(clinic: Clinic) -> None:
    doctor = clinic.ids["doc_one"]
    browser = clinic.browser("doc_one")
    before = clinic.usermeta_rows(doctor)
    count = counters(clinic)[outcome("denied")]
    first = browser.get(clinic.url("/connect"), allow_redirects=False)
    callback = approve_with_scopes(first.headers["Location"], "nothing@gmail.test", [])
    assert query_of(callback)["error"] == "access_denied"
    answer = browser.get(callback, allow_redirects=False)
    assert answer.status_code == 400 and "chose not to give" in answer.text
    assert clinic.usermeta_rows(doctor) == before
    assert counters(clinic)[outcome("denied")] == count + 1


# -- counters -----------------------------------------------------------------------------------


def test_outcomes_and_disconnections_are_counted(clinic: Clinic) -> None:
    doctor = clinic.ids["doc_three"]
    before = counters(clinic)
    admin = clinic.browser("admin")

    # connected
    done = clinic.connect(admin, doctor=doctor, email="three@gmail.test")
    assert done.status_code == 303
    # bad_state: the same callback again (replay)
    first = admin.get(clinic.url(f"/connect?doctor={doctor}"), allow_redirects=False)
    callback = approve_at_emulator(first.headers["Location"], "three@gmail.test")
    assert admin.get(callback, allow_redirects=False).status_code == 303
    assert admin.get(callback, allow_redirects=False).status_code == 400
    # denied
    first = admin.get(clinic.url(f"/connect?doctor={doctor}"), allow_redirects=False)
    denied = requests.get(first.headers["Location"] + "&emulator_auto_approve=deny",
                          allow_redirects=False, timeout=10).headers["Location"]
    assert admin.get(denied, allow_redirects=False).status_code == 400
    # error: Google refuses a code that was tampered with
    first = admin.get(clinic.url(f"/connect?doctor={doctor}"), allow_redirects=False)
    callback = approve_at_emulator(first.headers["Location"], "three@gmail.test")
    bad = admin.get(clinic.url("/oauth/callback"), allow_redirects=False,
                    params={"state": query_of(callback)["state"], "code": "4/not-a-code"})
    assert bad.status_code == 400 and "refused the authorization code" in bad.text
    # a disconnect
    page = admin.get(clinic.url("/admin"))
    gone = admin.post(clinic.url("/disconnect"), allow_redirects=False,
                      data={"csrf_token": csrf_from(page.text), "doctor": str(doctor)})
    assert gone.status_code == 303

    after = counters(clinic)
    assert after[outcome("connected")] - before[outcome("connected")] == 2
    assert after[outcome("bad_state")] - before[outcome("bad_state")] == 1
    assert after[outcome("denied")] - before[outcome("denied")] == 1
    assert after[outcome("error")] - before[outcome("error")] == 1
    assert after[outcome("scope_missing")] == before[outcome("scope_missing")]
    assert after[("kcsc_disconnections_total", ())] - \
        before[("kcsc_disconnections_total", ())] == 1
