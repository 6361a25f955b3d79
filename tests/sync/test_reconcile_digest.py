"""Reconcile with database-side day digests: unchanged days are skipped, every kind of change
is still caught by the next reconcile."""

from __future__ import annotations

import dataclasses
from datetime import time, timedelta

import sqlalchemy as sa

from sidecar.state import StateStore
from sidecar.sync.outbound import CURSOR_DIGESTS, CURSOR_LAST_ID, OutboundSync


def _three_days(world):
    doctor, service, _email = world.doctor()
    today = world.clock.now().date()
    days = [today + timedelta(days=n) for n in (3, 4, 5)]
    bookings = [world.book(doctor, service, day, time(10, 0)) for day in days]
    world.settle()
    ob = world.outbound
    ob.reconcile()  # the first reconcile of the process compares the whole window
    assert ob.reconcile().scanned == 0  # nothing changed: no appointment is even loaded
    return doctor, service, days, bookings


def test_a_reschedule_is_requeued_and_only_its_days_are_loaded(world):
    _doctor, _service, days, bookings = _three_days(world)
    with world.engine.begin() as conn:
        world.kc.reschedule(conn, bookings[0].id, days[1], time(15, 0))
    res = world.outbound.reconcile()
    assert res.queued == 1
    # the day it left and the day it moved to; the untouched third day is skipped
    assert res.scanned == 2
    world.settle()
    event_id = world.mapping(bookings[0].id)[0]["event_id"]
    [event] = [e for e in world.google.dump()["calendars"][0]["events"] if e["id"] == event_id]
    assert event["start"]["dateTime"] == f"{days[1].isoformat()}T15:00:00+01:00"


def test_a_telemed_booking_the_scan_missed_is_found_on_its_day(world):
    doctor, service, days, _bookings = _three_days(world)
    world.runtime.state.set_cursor(CURSOR_LAST_ID, str(10**9))  # the poll will not see it
    booking = world.book(doctor, service, days[2], time(11, 0))
    res = world.outbound.reconcile()
    assert res.queued == 1 and res.scanned == 2
    world.settle()
    assert world.mapping(booking.id)[0]["url"].startswith("https://meet.google.com/")


def test_a_change_outside_the_appointment_row_compares_the_whole_window(world):
    _doctor, service, _days, _bookings = _three_days(world)
    svc = world.runtime.schema.services
    with world.engine.begin() as conn:
        conn.execute(sa.update(svc).where(svc.c.id == service).values(name="Video visit"))
    res = world.outbound.reconcile()
    assert res.scanned == 3 and res.queued == 3  # the summary shows the service name
    world.settle()
    assert world.outbound.reconcile().scanned == 0


def test_an_item_whose_state_changed_is_compared_again(world):
    """A worker that synced stale facts changes its item; the next reconcile re-checks that
    day, so the stale fingerprint is caught even though the appointment row did not change
    after the previous reconcile."""
    _doctor, _service, _days, bookings = _three_days(world)
    items = StateStore(world.engine, world.runtime.names).tables.items
    with world.engine.begin() as conn:
        conn.execute(sa.update(items).where(items.c.appointment_id == bookings[1].id)
                     .values(fingerprint="stale"))
    res = world.outbound.reconcile()
    assert res.scanned == 1 and res.queued == 1


def test_every_nth_reconcile_is_full(world):
    _three_days(world)
    ob = world.outbound
    ob.full_reconcile_every = 2
    scanned = [ob.reconcile().scanned for _ in range(4)]
    assert sorted(scanned) == [0, 0, 3, 3]


def test_a_day_entering_the_window_is_compared(world):
    doctor, service, _days, _bookings = _three_days(world)
    ob = world.outbound
    _first, last = ob.window(world.clock.now().date())
    world.runtime.state.set_cursor(CURSOR_LAST_ID, str(10**9))  # the poll will not see it
    beyond = world.book(doctor, service, last + timedelta(days=1), time(9, 0))
    assert ob.reconcile().scanned == 0  # outside the window
    world.clock.advance(timedelta(days=1).total_seconds())
    res = ob.reconcile()
    assert res.queued == 1 and res.scanned == 1
    world.settle()
    assert world.mapping(beyond.id)[0]["url"].startswith("https://meet.google.com/")


def _restarted(world, **sync_values):
    """A new engine on the same database, as after a restart (optionally other settings)."""
    rt = world.runtime
    if sync_values:
        rt.settings = dataclasses.replace(
            rt.settings, sync=dataclasses.replace(rt.settings.sync, **sync_values))
    return OutboundSync(rt, rt.google_factory, max_workers=2)


def test_a_restarted_process_starts_from_the_stored_digests(world):
    """The first reconcile after a restart loads only what changed while it was down (on the
    benchmark's 1M-row database the full compare took 15.8 s, this path 0.6 s)."""
    _doctor, _service, days, bookings = _three_days(world)
    with world.engine.begin() as conn:  # a reschedule while the sidecar was down
        world.kc.reschedule(conn, bookings[2].id, days[2], time(16, 0))
    ob = _restarted(world)
    try:
        res = ob.reconcile()
        assert res.scanned == 1 and res.queued == 1  # only the changed day
    finally:
        ob.close()


def test_stored_digests_are_not_trusted_under_other_event_settings(world):
    _three_days(world)
    ob = _restarted(world, summary_template="Video visit: {services}")
    try:
        res = ob.reconcile()
        assert res.scanned == 3 and res.queued == 3  # every event's summary changes
    finally:
        ob.close()


def test_unreadable_stored_digests_mean_a_full_compare(world):
    _three_days(world)
    world.runtime.state.set_cursor(CURSOR_DIGESTS, '{"v": 1, "days": "garbage"')
    ob = _restarted(world)
    try:
        assert ob.reconcile().scanned == 3  # compared everything; nothing was wrong
        assert ob.reconcile().scanned == 0  # and stored fresh digests
        assert _restarted(world).reconcile().scanned == 0
    finally:
        ob.close()
