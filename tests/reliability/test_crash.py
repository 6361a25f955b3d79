"""Crash: ``kill -9`` the sidecar process at seeded random moments of a backfill, restart it each
time; in the end every qualifying appointment has exactly one live event and one mapping row, and
Google holds no orphan event of ours.

The emulator runs in this process on a real port and on the real clock; the sidecar is a separate
process (``tests.reliability.runner``), so the kill is a real SIGKILL mid-request, mid-transaction
or between the insert and the mapping write. Kill moments are chosen by the number of requests
the emulator has seen (seeded), plus a seeded sub-millisecond jitter, so each kill lands while the
worker is busy.
"""

from __future__ import annotations

import random
import time
from datetime import date, timedelta

import sqlalchemy as sa

from sidecar.clock import SystemClock
from tests.reliability.audit import audit
from tests.reliability.clinic import Worker, book_clinic, report, sidecar_env
from tests.reliability.conftest import count

SEED = 20260501


def _wait_for_requests(google, target: int, worker: Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(google.request_log) < target and worker.alive():
        if time.monotonic() > deadline:
            raise AssertionError(f"worker made no progress towards request {target}")
        time.sleep(0.002)


def leased_items(world) -> int:
    """Items a just-killed worker held (leased, or created in Google but not yet mapped)."""
    t = world.runtime.state.tables.items
    with world.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
            sa.or_(t.c.claimed_by.is_not(None), t.c.state == "creating"))).scalar() or 0)


def test_kill_9_during_backfill_leaves_exactly_one_event_per_appointment(world_factory, log_tap):
    appointments, kills = count(150, 1000), count(3, 20)
    world = world_factory(clock=SystemClock(), request_log_limit=1_000_000)
    bookings = book_clinic(world, appointments, doctors=max(3, appointments // 100),
                           start_day=date.today() + timedelta(days=2))
    env = sidecar_env(world)
    rng = random.Random(SEED)
    base = len(world.google.request_log)
    targets = sorted(rng.sample(range(base + 5, base + len(bookings.qualifying)), kills))
    landed = in_flight = 0
    logs: list[tuple[str, str]] = []
    for target in targets:
        worker = Worker(env)
        _wait_for_requests(world.google, target, worker, timeout=60)
        time.sleep(rng.random() / 1000)
        landed += worker.kill()
        in_flight += leased_items(world)
        logs.append(("runner", worker.output()))
    final = Worker(env)
    assert final.wait(timeout=count(120, 600)) == 0
    logs.append(("runner", final.output()))

    result = audit(world.google, world.engine, world.runtime.schema.meet_mappings,
                   bookings.qualifying, bookings.not_qualifying)
    inserts = world.google.requests("calendar.events.insert")
    report("crash", appointments=appointments, qualifying=len(bookings.qualifying),
           kills_planned=kills, kills_landed=landed, insert_calls=len(inserts),
           adopted_after_409=sum(1 for e in inserts if e.get("status") == 409),
           items_leased_at_kills=in_flight,
           duplicates=len(result.duplicates) + len(result.double_inserts),
           lost=len(result.lost), orphans=len(result.orphans))
    assert result.problems == [], result.summary() + "\n" + "\n".join(result.problems[:20])
    assert landed == kills  # every kill hit a running worker
    counts = world.runtime.state.count_by_state()
    assert set(counts) <= {"synced", "done"}, counts
    # the subprocess logs (redacted output) hold no secret either
    assert log_tap.findings(since=log_tap.mark(), extra_text=logs) == []
