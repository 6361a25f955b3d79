"""events.list: paging, sync tokens, deletions, forbidden combinations, 410 (reference §8)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from googleapiclient.errors import HttpError

from tests.emulator.conftest import Emu


def ev(n: int, day: int = 1) -> dict[str, Any]:
    return {
        "id": f"evt{n:05d}",
        "summary": f"Appointment {n}",
        "start": {"dateTime": f"2026-12-{day:02d}T10:00:00Z"},
        "end": {"dateTime": f"2026-12-{day:02d}T10:30:00Z"},
    }


def list_all(svc: Any, **params: Any) -> tuple[list[dict[str, Any]], str, int]:
    """Loop while nextPageToken; returns items, nextSyncToken and the number of pages."""
    items, pages, token = [], 0, None
    while True:
        resp = svc.events().list(calendarId="primary", pageToken=token, **params).execute()
        pages += 1
        items += resp["items"]
        token = resp.get("nextPageToken")
        if token is None:
            return items, resp["nextSyncToken"], pages
        assert "nextSyncToken" not in resp  # only on the last page


def reason(info: pytest.ExceptionInfo[HttpError]) -> tuple[int, str]:
    err = json.loads(info.value.content)["error"]
    return err["code"], err["errors"][0]["reason"]


def test_paging_and_sync_token_only_on_last_page(emu: Emu) -> None:
    """nextPageToken "Omitted if no further results are available, in which case nextSyncToken
    is provided"."""
    svc = emu.calendar()
    for n in range(7):
        svc.events().insert(calendarId="primary", body=ev(n)).execute()
    items, _, pages = list_all(svc, maxResults=3)
    assert pages == 3 and [i["id"] for i in items] == [f"evt{n:05d}" for n in range(7)]


def test_default_page_size_is_250(emu: Emu) -> None:
    for n in range(251):
        emu.state.user_create_event("doc@example.com", ev(n))
    svc = emu.calendar()
    first = svc.events().list(calendarId="primary").execute()
    assert len(first["items"]) == 250 and "nextPageToken" in first


def test_sync_token_returns_changes_including_cancelled(emu: Emu) -> None:
    """Incremental sync returns what changed since the token; deleted events are always in the
    result set (as cancelled, id guaranteed)."""
    svc = emu.calendar()
    for n in range(3):
        svc.events().insert(calendarId="primary", body=ev(n)).execute()
    _, token, _ = list_all(svc)
    svc.events().delete(calendarId="primary", eventId="evt00001").execute()
    svc.events().patch(calendarId="primary", eventId="evt00002",
                       body={"summary": "moved"}).execute()
    svc.events().insert(calendarId="primary", body=ev(3)).execute()
    changes, token2, _ = list_all(svc, syncToken=token)
    assert [(c["id"], c["status"]) for c in changes] == [
        ("evt00001", "cancelled"), ("evt00002", "confirmed"), ("evt00003", "confirmed")]
    assert list_all(svc, syncToken=token2)[0] == []


def test_plain_list_hides_cancelled_unless_show_deleted(emu: Emu) -> None:
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=ev(1)).execute()
    svc.events().delete(calendarId="primary", eventId="evt00001").execute()
    assert list_all(svc)[0] == []
    assert [e["status"] for e in list_all(svc, showDeleted=True)[0]] == ["cancelled"]


def test_changes_during_paging_come_with_the_next_sync(emu: Emu) -> None:
    svc = emu.calendar()
    for n in range(4):
        svc.events().insert(calendarId="primary", body=ev(n)).execute()
    first = svc.events().list(calendarId="primary", maxResults=2).execute()
    svc.events().patch(calendarId="primary", eventId="evt00000", body={"summary": "x"}).execute()
    rest = svc.events().list(calendarId="primary", maxResults=2,
                             pageToken=first["nextPageToken"]).execute()
    changes, _, _ = list_all(svc, syncToken=rest["nextSyncToken"])
    assert [c["id"] for c in changes] == ["evt00000"]


@pytest.mark.parametrize(
    "extra",
    [{"timeMin": "2026-12-01T00:00:00Z"}, {"timeMax": "2026-12-01T00:00:00Z"},
     {"q": "x"}, {"iCalUID": "a@google.com"}, {"orderBy": "updated"},
     {"updatedMin": "2026-12-01T00:00:00Z"}, {"privateExtendedProperty": "a=b"},
     {"showDeleted": False}],
)
def test_forbidden_combinations_with_sync_token(emu: Emu, extra: dict[str, Any]) -> None:
    """syncToken "cannot be combined with" iCalUID, orderBy, privateExtendedProperty, q,
    sharedExtendedProperty, timeMin, timeMax or updatedMin; showDeleted=false not allowed."""
    svc = emu.calendar()
    _, token, _ = list_all(svc)
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary", syncToken=token, **extra).execute()
    assert reason(info)[0] == 400


def test_invalidated_sync_token_is_410_full_sync_required(emu: Emu) -> None:
    """"If the syncToken expires, the server will respond with a 410 GONE"; reason
    fullSyncRequired (domain calendar)."""
    svc = emu.calendar()
    _, token, _ = list_all(svc)
    emu.state.invalidate_sync_tokens("doc@example.com")
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary", syncToken=token).execute()
    assert reason(info) == (410, "fullSyncRequired")
    _, fresh, _ = list_all(svc)  # a full sync gives a token that works
    assert list_all(svc, syncToken=fresh)[0] == []


def test_garbage_sync_token_and_page_token_are_400(emu: Emu) -> None:
    svc = emu.calendar()
    for params in ({"syncToken": "garbage"}, {"pageToken": "garbage"}):
        with pytest.raises(HttpError) as info:
            svc.events().list(calendarId="primary", **params).execute()
        assert reason(info)[0] == 400


def test_time_bounds_are_exclusive_on_end_and_start(emu: Emu) -> None:
    """timeMin bounds an event's end (exclusive), timeMax its start (exclusive)."""
    svc = emu.calendar()
    for n, day in ((1, 1), (2, 2), (3, 3)):
        svc.events().insert(calendarId="primary", body=ev(n, day)).execute()
    items, _, _ = list_all(svc, timeMin="2026-12-01T10:30:00Z", timeMax="2026-12-03T10:00:00Z")
    assert [i["id"] for i in items] == ["evt00002"]
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary", timeMin="2026-12-02T00:00:00Z",
                          timeMax="2026-12-01T00:00:00Z").execute()
    assert reason(info) == (400, "timeRangeEmpty")


def test_order_by_start_time_needs_single_events(emu: Emu) -> None:
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=ev(1, 3)).execute()
    svc.events().insert(calendarId="primary", body=ev(2, 1)).execute()
    with pytest.raises(HttpError):
        svc.events().list(calendarId="primary", orderBy="startTime").execute()
    items, _, _ = list_all(svc, orderBy="startTime", singleEvents=True)
    assert [i["id"] for i in items] == ["evt00002", "evt00001"]


def test_private_extended_property_filter(emu: Emu) -> None:
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body={
        **ev(1), "extendedProperties": {"private": {"kcAppointment": "42"}}}).execute()
    svc.events().insert(calendarId="primary", body=ev(2)).execute()
    items, _, _ = list_all(svc, privateExtendedProperty="kcAppointment=42")
    assert [i["id"] for i in items] == ["evt00001"]


def test_injected_410_fault_on_list(emu: Emu) -> None:
    svc = emu.calendar()
    emu.state.inject_faults("calendar.events.list", ["fullSyncRequired"])
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary").execute()
    assert reason(info) == (410, "fullSyncRequired")
