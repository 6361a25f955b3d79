"""The scheduler's jobs against MariaDB and the Google emulator: each job is called directly with
a fake clock; one test runs the real background scheduler briefly."""

from __future__ import annotations

import threading
import time as systime
from collections.abc import Iterator
from datetime import date, time

import pytest

from sidecar.clock import FakeClock
from sidecar.db import named_lock
from sidecar.scheduler import RECONCILE_LOCK, SCAN_LOCK, SyncScheduler
from tests.sync.conftest import SyncWorld, make_world


@pytest.fixture
def world(sync_db: str, clock: FakeClock) -> Iterator[SyncWorld]:
    yield from make_world(sync_db, clock)


@pytest.fixture
def sched(world: SyncWorld) -> SyncScheduler:
    return SyncScheduler(world.runtime, outbound=world.outbound, with_inbound=False)


def meet_url(world: SyncWorld, appointment_id: int) -> str | None:
    rows = world.mapping(appointment_id)
    return rows[0]["url"] if rows else None


def test_scan_job_gives_a_new_booking_its_meet_link(world, sched):
    doctor, service, _ = world.doctor()
    booking = world.book(doctor, service, date(2026, 12, 2), time(9, 30))
    result = sched.scan()
    assert result is not None and result.queued == 1 and result.created == 1
    assert (meet_url(world, booking.id) or "").startswith("https://meet.google.com/")


def test_scan_is_skipped_while_another_worker_holds_the_scan_lock(world, sched):
    doctor, service, _ = world.doctor()
    booking = world.book(doctor, service)
    held, release = threading.Event(), threading.Event()

    def other_replica() -> None:
        with named_lock(world.engine, SCAN_LOCK):
            held.set()
            release.wait(10)

    other = threading.Thread(target=other_replica)
    other.start()
    try:
        assert held.wait(10)
        assert sched.scan() is None
        assert world.runtime.state.get_item(booking.id) is None
    finally:
        release.set()
        other.join()
    assert sched.scan() is not None
    assert meet_url(world, booking.id) is not None


def test_reconcile_job_moves_a_rescheduled_meeting_and_skips_when_locked(world, sched):
    doctor, service, email = world.doctor()
    booking = world.book(doctor, service, date(2026, 12, 1), time(10, 0))
    sched.scan()
    with world.engine.begin() as conn:
        world.kc.reschedule(conn, booking.id, date(2026, 12, 4), time(16, 0))
    with named_lock(world.engine, RECONCILE_LOCK):
        assert sched.reconcile() is None
    result = sched.reconcile()
    assert result is not None and result.updated == 1
    [event] = [e for e in world.events(email) if e.get("status") != "cancelled"]
    assert event["start"]["dateTime"] == "2026-12-04T16:00:00+01:00"


def test_retry_job_requeues_failed_items_with_backoff(world, sched):
    doctor, service, _ = world.doctor()
    booking = world.book(doctor, service)
    world.outbound.scan_new()
    [claim] = world.runtime.state.claim_due_items(world.clock.now(), 10, "test", 60)
    world.runtime.state.mark_failed(claim, now=world.clock.now(), error="BadRequest: boom")

    world.clock.advance(10)
    assert sched.retry() == 0  # sync.retry_seconds (30) not over yet
    world.clock.advance(25)
    assert sched.retry() == 1
    sched.drain()
    item = world.runtime.state.get_item(booking.id)
    assert item.state == "synced" and item.last_error is None
    assert meet_url(world, booking.id) is not None


def test_a_second_failure_waits_twice_as_long(world, sched):
    doctor, service, _ = world.doctor()
    world.book(doctor, service)
    world.outbound.scan_new()
    state = world.runtime.state

    def fail_once() -> None:
        [claim] = state.claim_due_items(world.clock.now(), 10, "test", 60)
        state.mark_failed(claim, now=world.clock.now(), error="BadRequest: boom")

    fail_once()
    world.clock.advance(31)
    assert sched.retry() == 1
    fail_once()  # second failure: the next retry waits 60 s
    world.clock.advance(45)
    assert sched.retry() == 0
    world.clock.advance(20)
    assert sched.retry() == 1


def test_run_cycle_and_queue_metrics(world, sched):
    doctor, service, _ = world.doctor()
    first = world.book(doctor, service)
    second = world.book(doctor, service, date(2026, 12, 3))
    result = sched.run_cycle()
    assert result.created == 2 and result.failed == 0
    assert meet_url(world, first.id) and meet_url(world, second.id)
    body, _ = world.runtime.metrics.render()
    assert b"queue" in body


def test_readiness_reports_a_stopped_scheduler(world, sched):
    assert world.runtime.readiness()["scheduler"] == "scheduler is not running"


def test_real_scheduler_starts_processes_and_stops(world, sched):
    doctor, service, _ = world.doctor()
    booking = world.book(doctor, service)
    sched.start()
    try:
        assert "scheduler" not in world.runtime.readiness()
        deadline = systime.monotonic() + 10
        while meet_url(world, booking.id) is None and systime.monotonic() < deadline:
            systime.sleep(0.05)
        assert meet_url(world, booking.id) is not None
        assert sched.last_ok and not sched.last_error
    finally:
        sched.stop()
    assert not sched.running
    assert "scheduler" in world.runtime.readiness()


def test_a_scan_that_finds_a_booking_wakes_the_drain_at_once(world):
    """The periodic scan does not drain inline (a long drain would hold back the next scan);
    it wakes the drain job, so a new booking does not wait for the drain's own interval."""
    sched = SyncScheduler(world.runtime, outbound=world.outbound, with_inbound=False,
                          drain_seconds=3600)
    doctor, service, _ = world.doctor()
    sched.start()
    try:
        deadline = systime.monotonic() + 10
        while not {"drain", "reconcile"} <= set(sched.last_ok) and systime.monotonic() < deadline:
            # the first runs (at start) are over: the next drain is in 1 h, the next reconcile
            # (which drains too) in a minute
            systime.sleep(0.02)
        booking = world.book(doctor, service)
        deadline = systime.monotonic() + 10
        while meet_url(world, booking.id) is None and systime.monotonic() < deadline:
            systime.sleep(0.05)
        assert meet_url(world, booking.id) is not None
    finally:
        sched.stop()
