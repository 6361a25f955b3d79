"""Calendar v3 events through googleapiclient against the emulator.

Rules come from the discovery doc (``calendar.v3.json``) and the reference notes §4-§6, §9, §10.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from googleapiclient.errors import HttpError

from tests.emulator.conftest import CAL_EVENTS, CAL_READONLY, Emu, http

START = {"dateTime": "2026-12-01T10:00:00+01:00", "timeZone": "Europe/Berlin"}
END = {"dateTime": "2026-12-01T10:30:00+01:00", "timeZone": "Europe/Berlin"}
MEET = {"createRequest": {"requestId": "req-1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}}


def body(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": "Consultation", "start": START, "end": END}
    out.update(over)
    return out


def error_of(info: pytest.ExceptionInfo[HttpError]) -> tuple[int, str]:
    data = json.loads(info.value.content)["error"]
    return data["code"], data["errors"][0]["reason"]


def test_insert_sets_google_fields(emu: Emu) -> None:
    """insert returns the server fields Google sets: kind, etag, htmlLink, created, updated,
    iCalUID, sequence 0, creator/organizer = the account (self)."""
    svc = emu.calendar()
    ev = svc.events().insert(calendarId="primary", body=body(id="appt00001")).execute()
    assert ev["id"] == "appt00001"
    assert ev["kind"] == "calendar#event" and ev["status"] == "confirmed"
    assert ev["htmlLink"].startswith("https://www.google.com/calendar/event?eid=")
    assert ev["created"] == ev["updated"] == "2026-11-28T09:00:00.000Z"
    assert ev["etag"].startswith('"')
    assert ev["iCalUID"] == "appt00001@google.com" and ev["sequence"] == 0
    assert ev["creator"] == ev["organizer"] == {"email": "doc@example.com", "self": True}
    # the account e-mail is an alias of primary
    assert svc.events().get(calendarId="doc@example.com", eventId="appt00001").execute() == ev


@pytest.mark.parametrize("bad_id", ["abcd", "ABCDE12345", "abcdw12345", "abc-de1234", "x" * 5])
def test_client_ids_must_be_base32hex_5_to_1024(emu: Emu, bad_id: str) -> None:
    """Event.id: characters a-v and 0-9, length 5-1024 (discovery doc)."""
    with pytest.raises(HttpError) as info:
        emu.calendar().events().insert(calendarId="primary", body=body(id=bad_id)).execute()
    assert error_of(info) == (400, "invalid")


def test_duplicate_id_is_409_even_after_delete(emu: Emu) -> None:
    """409 duplicate "The requested identifier already exists.", also for a cancelled event
    (google-api-python-client#846, #210)."""
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(id="appt00002")).execute()
    svc.events().delete(calendarId="primary", eventId="appt00002").execute()
    with pytest.raises(HttpError) as info:
        svc.events().insert(calendarId="primary", body=body(id="appt00002")).execute()
    assert error_of(info) == (409, "duplicate")
    assert json.loads(info.value.content)["error"]["message"] == (
        "The requested identifier already exists.")


def test_conference_ignored_without_conference_data_version(emu: Emu) -> None:
    """conferenceDataVersion 0 "ignores conference data in the event's body" (no error)."""
    ev = emu.calendar().events().insert(calendarId="primary",
                                        body=body(conferenceData=MEET)).execute()
    assert "conferenceData" not in ev and "hangoutLink" not in ev


def test_meet_pending_then_success_after_delay_on_clock(emu: Emu) -> None:
    """createRequest starts pending; after the configured delay (1 s of emulator clock) it is
    success with hangoutLink, a video entry point, conferenceId and conferenceSolution."""
    svc = emu.calendar()
    ev = svc.events().insert(calendarId="primary", body=body(id="meet00001", conferenceData=MEET),
                             conferenceDataVersion=1).execute()
    assert ev["conferenceData"]["createRequest"]["status"] == {"statusCode": "pending"}
    assert "hangoutLink" not in ev and "entryPoints" not in ev["conferenceData"]
    assert svc.events().get(calendarId="primary", eventId="meet00001").execute()[
        "conferenceData"]["createRequest"]["status"]["statusCode"] == "pending"
    emu.clock.advance(1)
    ev = svc.events().get(calendarId="primary", eventId="meet00001").execute()
    cd = ev["conferenceData"]
    assert cd["createRequest"]["status"]["statusCode"] == "success"
    code = cd["conferenceId"]
    assert len(code) == 12 and code[3] == "-" and code[8] == "-"
    assert ev["hangoutLink"] == f"https://meet.google.com/{code}"
    assert cd["entryPoints"] == [{"entryPointType": "video", "uri": ev["hangoutLink"],
                                  "label": f"meet.google.com/{code}"}]
    assert cd["conferenceSolution"]["key"] == {"type": "hangoutsMeet"}


def test_meet_failure_injected_has_no_solution_or_link(emu: Emu) -> None:
    """A failed create request: status failure, conferenceSolution unset, no hangoutLink."""
    emu.state.set_conference_mode("failure", count=1)
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(id="meet00002", conferenceData=MEET),
                        conferenceDataVersion=1).execute()
    emu.state.resolve_conferences()
    ev = svc.events().get(calendarId="primary", eventId="meet00002").execute()
    assert ev["conferenceData"] == {"createRequest": {
        "requestId": "req-1", "conferenceSolutionKey": {"type": "hangoutsMeet"},
        "status": {"statusCode": "failure"}}}
    assert "hangoutLink" not in ev
    # retry with a new requestId succeeds (the failure was for one request only)
    retry = {"createRequest": {**MEET["createRequest"], "requestId": "req-2"}}
    svc.events().patch(calendarId="primary", eventId="meet00002",
                       body={"conferenceData": retry}, conferenceDataVersion=1).execute()
    emu.clock.advance(1)
    assert "hangoutLink" in svc.events().get(calendarId="primary", eventId="meet00002").execute()


def test_meet_pending_forever_until_explicit_resolve(emu: Emu) -> None:
    emu.state.set_conference_mode("pending", count=1)
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(id="meet00003", conferenceData=MEET),
                        conferenceDataVersion=1).execute()
    emu.clock.advance(3600)
    ev = svc.events().get(calendarId="primary", eventId="meet00003").execute()
    assert ev["conferenceData"]["createRequest"]["status"]["statusCode"] == "pending"
    assert emu.state.resolve_conferences() == 1
    assert "hangoutLink" in svc.events().get(calendarId="primary", eventId="meet00003").execute()


def test_repeated_request_id_is_ignored(emu: Emu) -> None:
    """"If an ID provided is the same as for the previous request, the request is ignored.\""""
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(id="meet00004", conferenceData=MEET),
                        conferenceDataVersion=1).execute()
    emu.clock.advance(1)
    link = svc.events().get(calendarId="primary", eventId="meet00004").execute()["hangoutLink"]
    again = svc.events().patch(calendarId="primary", eventId="meet00004",
                               body={"conferenceData": MEET}, conferenceDataVersion=1).execute()
    assert again["hangoutLink"] == link


def test_conference_type_must_be_hangouts_meet(emu: Emu) -> None:
    bad = {"createRequest": {"requestId": "r", "conferenceSolutionKey": {"type": "eventHangout"}}}
    with pytest.raises(HttpError) as info:
        emu.calendar().events().insert(calendarId="primary", body=body(conferenceData=bad),
                                       conferenceDataVersion=1).execute()
    assert error_of(info) == (400, "invalid")


def test_patch_merges_and_update_replaces(emu: Emu) -> None:
    """patch merges (nested objects merged, arrays replaced); update replaces the resource, so
    omitted fields are cleared (why cal.com re-sends everything)."""
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(
        id="edit00001", description="first", location="Room 1",
        extendedProperties={"private": {"kc": "1", "site": "a"}})).execute()
    ev = svc.events().patch(calendarId="primary", eventId="edit00001", body={
        "description": "second", "extendedProperties": {"private": {"kc": "2"}}}).execute()
    assert ev["location"] == "Room 1" and ev["description"] == "second"
    assert ev["extendedProperties"]["private"] == {"kc": "2", "site": "a"}
    ev = svc.events().update(calendarId="primary", eventId="edit00001",
                             body=body(summary="Replaced")).execute()
    assert "location" not in ev and "description" not in ev and "extendedProperties" not in ev
    assert ev["summary"] == "Replaced" and ev["created"] == "2026-11-28T09:00:00.000Z"


def test_update_requires_start_and_end(emu: Emu) -> None:
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(id="edit00002")).execute()
    with pytest.raises(HttpError) as info:
        svc.events().update(calendarId="primary", eventId="edit00002",
                            body={"summary": "no times"}).execute()
    assert error_of(info) == (400, "required")


def test_update_with_version_1_and_no_conference_data_removes_the_meet(emu: Emu) -> None:
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(id="edit00003", conferenceData=MEET),
                        conferenceDataVersion=1).execute()
    emu.clock.advance(1)
    kept = svc.events().update(calendarId="primary", eventId="edit00003", body=body()).execute()
    assert "hangoutLink" in kept  # version 0: conference untouched
    gone = svc.events().update(calendarId="primary", eventId="edit00003", body=body(),
                               conferenceDataVersion=1).execute()
    assert "hangoutLink" not in gone and "conferenceData" not in gone


def test_sequence_increments_on_time_change_only(emu: Emu) -> None:
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(id="seq000001")).execute()
    ev = svc.events().patch(calendarId="primary", eventId="seq000001",
                            body={"summary": "renamed"}).execute()
    assert ev["sequence"] == 0
    ev = svc.events().patch(calendarId="primary", eventId="seq000001", body={
        "start": {"dateTime": "2026-12-01T11:00:00+01:00"},
        "end": {"dateTime": "2026-12-01T11:30:00+01:00"}}).execute()
    assert ev["sequence"] == 1


def test_delete_cancels_then_410_and_unknown_404(emu: Emu) -> None:
    """delete → status cancelled (get still returns it); second delete 410 "deleted"; unknown
    404 "notFound"."""
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(id="del000001")).execute()
    assert svc.events().delete(calendarId="primary", eventId="del000001",
                               sendUpdates="none").execute() == ""
    assert svc.events().get(calendarId="primary",
                            eventId="del000001").execute()["status"] == "cancelled"
    with pytest.raises(HttpError) as info:
        svc.events().delete(calendarId="primary", eventId="del000001").execute()
    assert error_of(info) == (410, "deleted")
    with pytest.raises(HttpError) as info:
        svc.events().delete(calendarId="primary", eventId="nosuch001").execute()
    assert error_of(info) == (404, "notFound")
    log = emu.state.requests("calendar.events.delete")
    assert log[0]["params"]["sendUpdates"] == "none"


def test_patch_status_confirmed_restores_a_cancelled_event(emu: Emu) -> None:
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=body(id="del000002")).execute()
    svc.events().delete(calendarId="primary", eventId="del000002").execute()
    ev = svc.events().patch(calendarId="primary", eventId="del000002",
                            body={"status": "confirmed"}).execute()
    assert ev["status"] == "confirmed"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"summary": 5}, "invalid"),
        ({"unknownField": "x"}, "invalid"),
        ({"attendees": {"email": "a@b.c"}}, "invalid"),
        ({"start": {"dateTime": "2026-12-01 10:00"}}, "invalid"),
        ({"start": {"dateTime": "2026-12-01T10:00:00"}}, "invalid"),  # no offset, no zone
        ({"start": {"date": "2026-12-01", "dateTime": "2026-12-01T10:00:00Z"}}, "invalid"),
        ({"end": {"dateTime": "2026-12-01T09:00:00+01:00"}}, "timeRangeEmpty"),
        ({"end": None}, "invalid"),
        ({"reminders": {"useDefault": "yes"}}, "invalid"),
    ],
)
def test_bodies_are_validated_against_the_discovery_schema(
    emu: Emu, bad: dict[str, Any], reason: str
) -> None:
    with pytest.raises(HttpError) as info:
        emu.calendar().events().insert(calendarId="primary", body=body(**bad)).execute()
    assert error_of(info) == (400, reason)
    assert all(not c["events"] for c in emu.state.dump()["calendars"])  # no partial write


def test_missing_end_is_required(emu: Emu) -> None:
    b = body()
    del b["end"]
    with pytest.raises(HttpError) as info:
        emu.calendar().events().insert(calendarId="primary", body=b).execute()
    assert error_of(info) == (400, "required")


def test_unknown_query_parameter_and_bad_enum_are_400(emu: Emu) -> None:
    """Query parameters are checked against the discovery doc (stricter than Google for
    unknown names)."""
    token = emu.connect()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    base = emu.url + "/calendar/v3/calendars/primary/events"
    for query in ("bogus=1", "maxResults=0", "maxResults=ten", "showDeleted=yes",
                  "orderBy=summary", "timeMin=2026-12-01"):
        status, _, raw = http("GET", f"{base}?{query}", headers=auth)
        assert status == 400, query
        assert json.loads(raw)["error"]["code"] == 400
    status, _, _ = http("POST", f"{base}?sendUpdates=some", headers=auth, json_body=body())
    assert status == 400


def test_other_accounts_calendars_are_not_found(emu: Emu) -> None:
    svc = emu.calendar()
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="someone.else@example.com").execute()
    assert error_of(info) == (404, "notFound")
    emu.state.add_calendar("doc@example.com", "clinic-calendar")
    assert svc.events().list(calendarId="clinic-calendar").execute()["items"] == []


ENVELOPE_401 = {"error": {"errors": [{
    "domain": "global", "reason": "authError", "message": "Invalid Credentials",
    "locationType": "header", "location": "Authorization"}],
    "code": 401, "message": "Invalid Credentials"}}


def test_missing_expired_revoked_token_is_401_in_google_envelope(emu: Emu) -> None:
    """401 authError "Invalid Credentials" (errors guide) for missing, expired and revoked
    access tokens; expiry is measured on the emulator clock."""
    url = emu.url + "/calendar/v3/calendars/primary/events"
    status, _, raw = http("GET", url)
    assert (status, json.loads(raw)) == (401, ENVELOPE_401)
    expired = emu.connect()["access_token"]
    assert http("GET", url, headers={"Authorization": f"Bearer {expired}"})[0] == 200
    emu.clock.advance(3599)
    status, _, raw = http("GET", url, headers={"Authorization": f"Bearer {expired}"})
    assert (status, json.loads(raw)) == (401, ENVELOPE_401)
    revoked = emu.connect("other@example.com")["access_token"]
    http("POST", emu.url + "/revoke", {"token": revoked})
    status, _, raw = http("GET", url, headers={"Authorization": f"Bearer {revoked}"})
    assert (status, json.loads(raw)) == (401, ENVELOPE_401)


def test_google_auth_refreshes_after_expiry_and_call_succeeds(emu: Emu) -> None:
    """With an expiry set, google-auth refreshes before the call (the normal path)."""
    tokens = emu.connect()
    creds = emu.credentials(tokens)
    creds.refresh(emu.auth_request())
    svc = emu.service(creds)
    emu.clock.advance(3600)
    # google-auth judges expiry on the real clock; the emulator's FakeClock says expired, so the
    # first call gets 401 and google-auth's AuthorizedHttp refreshes and retries once.
    assert svc.events().list(calendarId="primary").execute()["items"] == []


def test_insufficient_scope_is_403(emu: Emu) -> None:
    """Scopes per method from the discovery doc: calendar.readonly cannot insert."""
    svc = emu.calendar(scope=CAL_READONLY)
    assert svc.events().list(calendarId="primary").execute()["items"] == []
    with pytest.raises(HttpError) as info:
        svc.events().insert(calendarId="primary", body=body()).execute()
    assert error_of(info) == (403, "insufficientPermissions")


def test_app_created_scope_cannot_touch_primary(emu: Emu) -> None:
    svc = emu.calendar(scope="https://www.googleapis.com/auth/calendar.app.created")
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary").execute()
    assert error_of(info) == (403, "insufficientPermissions")


def test_request_log_records_method_user_params_status(emu: Emu) -> None:
    svc = emu.calendar(scope=CAL_EVENTS)
    svc.events().insert(calendarId="primary", body=body(id="log000001"),
                        sendUpdates="all").execute()
    (entry,) = emu.state.requests("calendar.events.insert")
    assert entry["user"] == "doc@example.com"
    assert entry["params"]["sendUpdates"] == "all"
    assert entry["status"] == 200 and entry["body"]["id"] == "log000001"
    assert entry["time"] == "2026-11-28T09:00:00+00:00"
