"""Incremental inbound sync against the emulator: paging, 410 recovery, ownership and each
reconciliation policy for events changed in Google."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import sqlalchemy as sa

from sidecar.meetings import event_id_for
from sidecar.sync.inbound import InboundSync
from sidecar.timezones import rfc3339


def live(events):
    return [e for e in events if e.get("status") != "cancelled"]


def lists(push, email):
    return push.world.google.requests("calendar.events.list", user=email)


def appointment(push, appointment_id):
    a = push.world.runtime.schema.appointments
    with push.world.engine.connect() as conn:
        return dict(conn.execute(sa.select(a).where(a.c.id == appointment_id)).mappings().one())


def audit(push, appointment_id):
    return [e.action for e in push.world.runtime.state.recent_events(
        appointment_id=appointment_id)]


def synced(push, count=1, *, inbound=None):
    """A connected doctor with ``count`` synced appointments and a first inbound sync done.
    Returns (doctor, email, day, [(booking, event)])."""
    w = push.world
    doctor, service, email = w.doctor()
    day = (w.clock.now() + timedelta(days=20)).date()
    bookings = [w.book(doctor, service, day, time(9 + n, 0)) for n in range(count)]
    w.settle()
    events = {e["id"]: e for e in live(w.events(email))}
    pairs = [(b, events[w.mapping(b.id)[0]["event_id"]]) for b in bookings]
    result = (inbound or push.inbound).sync_doctor(doctor)
    assert result.syncs == 1 and result.full_syncs == 1
    push.deliver()
    return doctor, email, day, pairs


@pytest.fixture
def policy(push):
    """``policy(**sync_values)`` → an InboundSync reading those ``[sync]`` settings."""
    yield push.with_policy
    push.restore_settings()


def test_multi_page_delta_is_applied_whole_and_the_token_saved_only_after_the_last_page(push):
    w = push.world
    paged = InboundSync(w.runtime, channels=push.channels, page_size=2)
    doctor, email, _day, pairs = synced(push, 5, inbound=paged)
    token = w.runtime.state.get_doctor(doctor).sync_token
    new = [w.google.user_regenerate_meet(email, event["id"]) for _, event in pairs]

    # Page 3 of 3 fails (twice: the client's retry too): pages 1-2 are applied, the token stays.
    w.google.inject_faults("calendar.events.list", [None, None, "500", "500"])
    failed = paged.sync_doctor(doctor)
    assert failed.failed == 1 and failed.pages == 2
    assert w.runtime.state.get_doctor(doctor).sync_token == token
    urls = [w.mapping(b.id)[0]["url"] for b, _ in pairs]
    assert urls[:4] == [e["hangoutLink"] for e in new[:4]]
    assert urls[4] == pairs[4][1]["hangoutLink"]

    # The next run lists the whole delta again; what was applied is not applied twice.
    again = paged.sync_doctor(doctor)
    assert again.failed == 0 and again.pages == 3 and again.links_updated == 1
    assert [w.mapping(b.id)[0]["url"] for b, _ in pairs] == [e["hangoutLink"] for e in new]
    assert w.runtime.state.get_doctor(doctor).sync_token not in (None, token)
    paging = lists(push, email)[-3:]
    assert "syncToken" in paging[0]["params"] and paging[0]["params"]["maxResults"] in (2, "2")
    assert all("pageToken" in call["params"] for call in paging[1:])


def test_expired_sync_token_leads_to_a_bounded_full_resync_without_duplicates(push):
    w = push.world
    doctor, email, _day, [(booking, event), (other, _)] = synced(push, 2)
    versions = {b.id: w.runtime.state.get_item(b.id).event_version for b in (booking, other)}
    w.google.invalidate_sync_tokens(email)
    new = w.google.user_regenerate_meet(email, event["id"])

    result = push.inbound.sync_doctor(doctor)
    assert result.failed == 0 and result.full_syncs == 1
    gone, full = lists(push, email)[-2:]
    assert gone["status"] == 410 and "syncToken" in gone["params"]
    assert "syncToken" not in full["params"]
    assert full["params"]["timeMin"] == rfc3339(w.clock.now() - timedelta(days=1))
    assert w.mapping(booking.id)[0]["url"] == new["hangoutLink"]
    assert len(live(w.events(email))) == 2
    assert [len(w.mapping(b.id)) for b in (booking, other)] == [1, 1]
    assert {b.id: w.runtime.state.get_item(b.id).event_version
            for b in (booking, other)} == versions

    after = push.inbound.sync_doctor(doctor)
    assert after.full_syncs == 0 and "syncToken" in lists(push, email)[-1]["params"]


def test_events_the_sidecar_does_not_own_are_ignored(push):
    w = push.world
    doctor, email, day, [(booking, _)] = synced(push)
    own = w.google.user_create_event(email, {
        "summary": "Dentist", "start": {"dateTime": f"{day}T15:00:00Z"},
        "end": {"dateTime": f"{day}T16:00:00Z"},
        "conferenceData": {"createRequest": {"requestId": "own-1",
                                             "conferenceSolutionKey": {"type": "hangoutsMeet"}}}})
    w.google.user_move_event(email, own["id"], {"dateTime": f"{day}T17:00:00Z"},
                             {"dateTime": f"{day}T18:00:00Z"})
    w.google.user_delete_event(email, own["id"])
    items = w.runtime.state.count_by_state()
    result = push.inbound.sync_doctor(doctor)
    assert result.events >= 1 and result.owned == 0
    assert w.runtime.state.count_by_state() == items
    assert w.mapping(booking.id)[0]["event_id"] != own["id"]
    w.settle()
    assert len(live(w.events(email))) == 1


def test_deleted_in_google_is_recreated_with_the_next_event_id_version(push):
    w = push.world
    _doctor, email, _day, [(booking, event)] = synced(push)
    push.channels.run_once()
    push.deliver()
    worker = push.new_worker()
    w.google.user_delete_event(email, event["id"])
    push.deliver()
    result = worker.run_pending()
    assert result.recreated == 1
    assert w.mapping(booking.id) == []  # no link to a deleted meeting meanwhile
    assert "recreate" in audit(push, booking.id)

    w.settle()
    [fresh] = live(w.events(email))
    assert fresh["id"] == event_id_for(w.outbound.site_key, booking.id, 1) != event["id"]
    [row] = w.mapping(booking.id)
    assert row["event_id"] == fresh["id"] and row["url"] == fresh["hangoutLink"]

    # Our own creation comes back as a notification: it matches KiviCare, nothing happens.
    push.deliver()
    again = worker.run_pending()
    assert again.syncs == 1 and again.recreated == again.reverted == again.links_updated == 0
    assert w.runtime.state.get_item(booking.id).state == "synced"


def test_deleted_in_google_with_policy_unlink_removes_the_mapping_and_stops(push, policy):
    w = push.world
    inbound = policy(google_deleted_policy="unlink")
    doctor, email, _day, [(booking, event)] = synced(push, inbound=inbound)
    w.google.user_delete_event(email, event["id"])
    result = inbound.sync_doctor(doctor)
    assert result.unlinked == 1
    assert w.mapping(booking.id) == []
    assert w.runtime.state.get_item(booking.id).state == "done"
    assert audit(push, booking.id)[0] == "unlink"
    w.settle()
    assert live(w.events(email)) == []


def test_moved_in_google_is_reverted(push):
    w = push.world
    doctor, email, day, [(booking, event)] = synced(push)
    before = appointment(push, booking.id)
    w.google.user_move_event(email, event["id"], {"dateTime": f"{day}T13:00:00+01:00"},
                             {"dateTime": f"{day}T13:30:00+01:00"})
    result = push.inbound.sync_doctor(doctor)
    assert result.reverted == 1 and result.accepted == 0
    w.settle()
    [back] = live(w.events(email))
    assert back["start"]["dateTime"] == f"{day}T09:00:00+01:00"
    assert back["hangoutLink"] == event["hangoutLink"]
    assert appointment(push, booking.id) == before
    # The patch back is itself a change in Google; it matches KiviCare, so it ends here.
    assert push.inbound.sync_doctor(doctor).reverted == 0


def test_moved_in_google_with_policy_accept_updates_the_appointment_consistently(push, policy):
    w = push.world
    inbound = policy(google_moved_policy="accept")
    doctor, email, day, [(booking, event)] = synced(push, inbound=inbound)
    next_day = day + timedelta(days=1)
    # Moved in Google, written in another zone: 13:30 UTC is 14:30 in Berlin; 45 minutes long.
    w.google.user_move_event(email, event["id"],
                             {"dateTime": f"{next_day}T13:30:00Z", "timeZone": "UTC"},
                             {"dateTime": f"{next_day}T14:15:00Z", "timeZone": "UTC"})
    result = inbound.sync_doctor(doctor)
    assert result.accepted == 1
    row = appointment(push, booking.id)
    assert row["appointment_start_date"] == next_day
    assert str(row["appointment_start_time"]) == "14:30:00"
    assert row["appointment_end_date"] == next_day
    assert str(row["appointment_end_time"]) == "15:15:00"
    assert row["appointment_start_utc"] == datetime.combine(next_day, time(13, 30))
    assert row["appointment_end_utc"] == datetime.combine(next_day, time(14, 15))
    assert row["appointment_timezone"] == "Europe/Berlin"
    assert "accept" in audit(push, booking.id)

    patches = len(w.google.requests("calendar.events.patch", user=email))
    w.settle()
    assert len(w.google.requests("calendar.events.patch", user=email)) == patches
    [kept] = live(w.events(email))
    assert datetime.fromisoformat(kept["start"]["dateTime"]).astimezone(UTC) == datetime(
        next_day.year, next_day.month, next_day.day, 13, 30, tzinfo=UTC)
    again = inbound.sync_doctor(doctor)
    assert again.accepted == again.reverted == 0


def test_kivicare_change_on_its_way_out_is_not_taken_for_a_google_move(push, policy):
    w = push.world
    inbound = policy(google_moved_policy="accept")
    doctor, email, day, [(booking, event)] = synced(push, inbound=inbound)
    with w.engine.begin() as conn:
        w.kc.reschedule(conn, booking.id, day, time(15, 0))
    # Google reports the event (an unrelated edit) before outbound pushed the new time.
    w.google.user_edit_event(email, event["id"], {"description": "seen in Google"})
    result = inbound.sync_doctor(doctor)
    assert result.owned == 1 and result.accepted == result.reverted == 0
    assert str(appointment(push, booking.id)["appointment_start_time"]) == "15:00:00"
    w.settle()
    [moved] = live(w.events(email))
    assert moved["start"]["dateTime"] == f"{day}T15:00:00+01:00"
    assert inbound.sync_doctor(doctor).accepted == 0


def test_event_deleted_because_kivicare_cancelled_is_not_recreated(push):
    w = push.world
    doctor, email, _day, [(booking, _event)] = synced(push)
    with w.engine.begin() as conn:
        w.kc.set_status(conn, booking.id, 0)
    w.settle()
    assert live(w.events(email)) == []
    result = push.inbound.sync_doctor(doctor)
    assert result.recreated == result.unlinked == 0
    w.settle()
    assert live(w.events(email)) == []
    assert w.runtime.state.get_item(booking.id).state == "done"

