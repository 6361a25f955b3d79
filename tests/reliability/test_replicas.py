"""Two replicas on one database and one Google: every effect happens exactly once.

* two ``OutboundSync`` engines (different worker ids) in threads of this process, racing over the
  same backlog while 10 % of Calendar calls fail and appointments are rescheduled and cancelled
  between rounds;
* two real sidecar processes started together on the same backlog.
"""

from __future__ import annotations

import random
import threading
from datetime import date, time, timedelta

from sidecar.clock import SystemClock
from tests.reliability.audit import audit
from tests.reliability.clinic import Worker, book_clinic, report, sidecar_env
from tests.reliability.conftest import count
from tests.reliability.storm import busy, new_outbound


def test_two_engines_in_threads_race_without_double_effects(world_factory):
    appointments = count(60, 500)
    world = world_factory(seed=5)
    start = world.clock.now().date() + timedelta(days=2)
    bookings = book_clinic(world, appointments, doctors=3, start_day=start)
    for method in ("calendar.events.insert", "calendar.events.get", "calendar.events.patch"):
        world.google.inject_fault_probability(method, "503", 0.10)
    engines = [new_outbound(world, f"replica-{n}", max_workers=2, batch_size=7)
               for n in (1, 2)]
    rng = random.Random(3)
    changed: list[int] = []
    errors: list[BaseException] = []

    def run(engine) -> None:
        try:
            for _ in range(3):
                engine.run_once()
        except BaseException as err:  # surfaced in the main thread
            errors.append(err)

    for rounds in range(1, 60):
        threads = [threading.Thread(target=run, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        if rounds in (1, 2):  # KiviCare keeps changing underneath the replicas
            with world.engine.begin() as conn:
                for appt in rng.sample(bookings.qualifying, 5):
                    if appt in changed:
                        continue
                    changed.append(appt)
                    if len(changed) % 2:
                        world.kc.reschedule(conn, appt, start + timedelta(days=45), time(16, 0))
                    else:
                        world.kc.set_status(conn, appt, 0)
        n, first = busy(world)
        if n == 0 and rounds > 2:
            break
        world.clock.advance(max(1.0, (first.replace(tzinfo=world.clock.now().tzinfo)
                                      - world.clock.now()).total_seconds() + 0.01)
                            if first else 1.0)
    cancelled = [a for i, a in enumerate(changed, 1) if i % 2 == 0]
    moved = [a for i, a in enumerate(changed, 1) if i % 2 == 1]
    qualifying = [a for a in bookings.qualifying if a not in cancelled]
    result = audit(world.google, world.engine, world.runtime.schema.meet_mappings, qualifying,
                   [*bookings.not_qualifying, *cancelled])
    assert result.problems == [], result.summary() + "\n" + "\n".join(result.problems[:20])
    emails = dict(bookings.doctors)
    for appt in moved:
        [row] = world.mapping(appt)
        event = world.google.event(emails[world.runtime.state.get_item(appt).doctor_id],
                                   row["event_id"])
        assert event["start"]["dateTime"].startswith(str(start + timedelta(days=45)) + "T16:00")
    report("replicas_threads", appointments=appointments, engines=2, rounds=rounds,
           changed=len(changed), insert_calls=len(world.calls("events.insert")),
           duplicates=len(result.duplicates) + len(result.double_inserts),
           lost=len(result.lost), orphans=len(result.orphans))


def test_two_sidecar_processes_share_the_backlog(world_factory, log_tap):
    appointments = count(80, 400)
    world = world_factory(clock=SystemClock(), request_log_limit=1_000_000)
    bookings = book_clinic(world, appointments, doctors=3,
                           start_day=date.today() + timedelta(days=2))
    env = sidecar_env(world, KCSC_RUNNER_BATCH="5")
    workers = [Worker(env), Worker(env)]
    codes = [w.wait(timeout=count(120, 600)) for w in workers]
    logs = [("runner", w.output()) for w in workers]
    assert codes == [0, 0], logs
    result = audit(world.google, world.engine, world.runtime.schema.meet_mappings,
                   bookings.qualifying, bookings.not_qualifying)
    assert result.problems == [], result.summary() + "\n" + "\n".join(result.problems[:20])
    report("replicas_processes", appointments=appointments, processes=2,
           insert_calls=len(world.calls("events.insert")),
           duplicates=len(result.duplicates) + len(result.double_inserts),
           lost=len(result.lost), orphans=len(result.orphans))
    assert log_tap.findings(since=log_tap.mark(), extra_text=logs) == []
