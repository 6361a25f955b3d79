"""``calendars.get`` through googleapiclient against the emulator.

Google answers ``calendars.get("primary")`` with the primary calendar's real id, which is the
account's e-mail address: that is how an app holding only a calendar scope learns which Google
account a doctor connected. Scopes are the discovery doc's for ``calendar.calendars.get``.
"""

from __future__ import annotations

import json

import pytest
from googleapiclient.errors import HttpError

from tests.emulator.conftest import CAL, CAL_EVENTS, CAL_READONLY, Emu, http


def test_primary_calendar_id_is_the_account_email(emu: Emu) -> None:
    svc = emu.calendar("Doc.Main@Example.com", scope=CAL)
    cal = svc.calendars().get(calendarId="primary").execute()
    assert cal["kind"] == "calendar#calendar"
    assert cal["id"] == "doc.main@example.com"  # Google's accounts are case-insensitive
    assert cal["timeZone"] and cal["etag"].startswith('"')
    assert "dataOwner" not in cal  # only set for secondary calendars
    # the e-mail names the same calendar; the request log attributes the call to the account
    assert svc.calendars().get(calendarId="doc.main@example.com").execute() == cal
    logged = emu.state.requests("calendar.calendars.get")
    assert [(r["user"], r["status"]) for r in logged] == [("doc.main@example.com", 200)] * 2


def test_read_only_scope_is_enough(emu: Emu) -> None:
    cal = emu.calendar("viewer@example.com", scope=CAL_READONLY).calendars().get(
        calendarId="primary").execute()
    assert cal["id"] == "viewer@example.com"


def test_events_scope_alone_is_refused(emu: Emu) -> None:
    """``calendar.events`` is not among calendars.get's scopes in the discovery doc."""
    with pytest.raises(HttpError) as info:
        emu.calendar("events@example.com", scope=CAL_EVENTS).calendars().get(
            calendarId="primary").execute()
    body = json.loads(info.value.content)["error"]
    assert (body["code"], body["errors"][0]["reason"]) == (403, "insufficientPermissions")


def test_secondary_and_unknown_calendars(emu: Emu) -> None:
    emu.state.add_calendar("owner@example.com", "team@group.calendar.google.com")
    svc = emu.calendar("owner@example.com", scope=CAL)
    team = svc.calendars().get(calendarId="team@group.calendar.google.com").execute()
    assert team["id"] == "team@group.calendar.google.com"
    assert team["dataOwner"] == "owner@example.com"
    with pytest.raises(HttpError) as info:
        svc.calendars().get(calendarId="someone.else@example.com").execute()
    assert info.value.resp.status == 404


def test_revoked_grant_is_401(emu: Emu) -> None:
    tokens = emu.connect("gone@example.com", scope=CAL)
    url = emu.url + "/calendar/v3/calendars/primary"
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    assert http("GET", url, headers=bearer)[0] == 200
    emu.state.revoke_grant("kc-test-client.apps.googleusercontent.com", "gone@example.com")
    status, headers, _ = http("GET", url, headers=bearer)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
