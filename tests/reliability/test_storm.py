"""Google error storm: 30 % of Calendar calls fail (403 rateLimitExceeded/userRateLimitExceeded,
429, 500, 503), 10 % of Meet conferences stay pending for a while, and one doctor revokes the
grant mid-run.

Everything that can be created is, exactly once; the revoked doctor is ``not_connected`` with the
reason on the admin page's data, costs no further Google call and their items wait, then resume
after a reconnect; every fault is retried with a backoff and counted in
``kcsc_google_retries_total``; no user ever sees more calls per sliding minute than the sidecar's
per-doctor budget (the emulator's quota is set just above it).
"""

from __future__ import annotations

import math
from datetime import timedelta

from sidecar.config import SyncSettings
from sidecar.web import connect_flow
from tests.reliability.audit import audit
from tests.reliability.clinic import book_clinic, report
from tests.reliability.conftest import count
from tests.reliability.storm import (
    by_label,
    counter_total,
    max_calls_per_sliding_minute,
    new_outbound,
    settle,
    wire_google,
)
from tests.sync.conftest import CLIENT_ID

FAULT_KINDS = ("rateLimitExceeded", "userRateLimitExceeded", "429", "500", "503")
FAULTED_METHODS = ("calendar.events.insert", "calendar.events.get", "calendar.events.patch",
                   "calendar.events.delete")
FAULT_RATE = 0.30
BUDGET = 30  # sidecar calls per doctor per minute
QUOTA = 40  # emulator's per-user quota: a call beyond the budget would still pass


def test_error_storm_creates_everything_exactly_once(world_factory):
    appointments = count(60, 600)
    world = world_factory(sync=SyncSettings(settle_seconds=0,
                                            per_doctor_calls_per_minute=BUDGET),
                          per_user_quota_per_minute=QUOTA, seed=11,
                          access_token_lifetime=10**8)
    waits = wire_google(world, limit=BUDGET)
    start = world.clock.now().date() + timedelta(days=2)
    bookings = book_clinic(world, appointments, doctors=4, start_day=start)
    revoked_id, revoked_email = bookings.doctors[-1]

    google = world.google
    per_kind = 1 - (1 - FAULT_RATE) ** (1 / len(FAULT_KINDS))  # five draws → 30 % overall
    for method in FAULTED_METHODS:
        for kind in FAULT_KINDS:
            google.inject_fault_probability(method, kind, per_kind)
    pending = math.ceil(len(bookings.qualifying) * 0.10)
    google.set_conference_mode("pending", count=pending)

    outbound = new_outbound(world, "storm-1")
    outbound.scan_new()
    outbound.reconcile()
    outbound.process_due(limit=len(bookings.qualifying) // 3)  # a third of the way in ...
    google.revoke_grant(CLIENT_ID, revoked_email)  # ... the doctor removes the app's access
    revoked_at = len(google.request_log)

    resolved_after = world.clock.now() + timedelta(minutes=2)

    def conferences_come_through(_round: int) -> None:
        if world.clock.now() >= resolved_after:
            google.resolve_conferences()

    settle(world, outbound, on_round=conferences_come_through)

    # -- the revoked doctor: not connected, reason kept, items waiting, no more calls ---------
    [row] = connect_flow.doctor_rows(world.runtime, [revoked_id])
    assert row.status == "not_connected"
    assert row.last_error and "refresh token" in row.last_error.lower(), row.last_error
    waiting = [i.appointment_id for i in world.runtime.state.list_items(
        states=["waiting_reconnect"], limit=10_000)]
    assert waiting and set(waiting) <= set(bookings.by_doctor[revoked_id])
    assert not any(world.mapping(a) for a in waiting)
    log = list(google.request_log)[revoked_at:]
    # Access tokens outlive the run, so every 401 after the revocation is the revoked doctor's:
    # one call finds out, one refresh is refused, then the doctor costs no Google call at all.
    refused = [i for i, e in enumerate(log) if e.get("error") == "invalid_grant"]
    assert len(refused) == 1
    unauthorised = [e for e in log if e.get("status") == 401]
    assert len(unauthorised) == 1 and log.index(unauthorised[0]) < refused[0]
    assert not [e for e in log if e.get("user") == revoked_email]
    healthy = [a for a in bookings.qualifying if a not in waiting]
    partial = audit(google, world.engine, world.runtime.schema.meet_mappings, healthy,
                    bookings.not_qualifying)
    assert partial.duplicates == partial.lost == partial.double_inserts == []

    # -- reconnecting resumes the waiting items ------------------------------------------------
    world.connect(revoked_id, revoked_email)
    settle(world, outbound, on_round=conferences_come_through)
    google.clear_faults()
    result = audit(google, world.engine, world.runtime.schema.meet_mappings,
                   bookings.qualifying, bookings.not_qualifying)
    assert result.problems == [], result.summary() + "\n" + "\n".join(result.problems[:20])

    # -- retries: every injected fault was retried, with a backoff, and counted ---------------
    log = list(google.request_log)
    faulted = [e for e in log if e.get("reason") in (*FAULT_KINDS, "backendError", "unavailable")
               or (e.get("status") in (429, 500, 503))]
    retries = counter_total(world.runtime.metrics, "kcsc_google_retries_total")
    calendar_calls = [e for e in log if str(e.get("api_method", "")).startswith("calendar.")]
    assert len(faulted) >= 0.2 * len(calendar_calls)
    assert retries == len(faulted), (retries, len(faulted))
    assert sum(waits.backoff) > 0
    # in-process retries each waited a (jittered, exponential) backoff on the clock; the rest
    # were rescheduled by the outbound engine with its own longer backoff
    in_process = by_label(world.runtime.metrics, ("rate_limited", "server_error", "network"))
    assert in_process == len(waits.backoff) and min(waits.backoff) > 0
    assert retries - in_process > 0
    items = world.runtime.state.list_items(limit=10_000)

    # -- quota: the per-user rate stayed within the sidecar's budget ---------------------------
    worst = max_calls_per_sliding_minute(log)
    assert max(worst.values()) <= BUDGET, worst
    assert not [e for e in log if e.get("reason") == "userRateLimitExceeded"
                and e not in faulted]
    report("error_storm", appointments=appointments, qualifying=len(bookings.qualifying),
           calendar_calls=len(calendar_calls), faults_injected=len(faulted),
           retries_counted=int(retries), backoff_seconds=round(sum(waits.backoff), 1),
           limiter_waits=len([w for w in waits.limiter if w > 0]),
           conferences_pending=pending, waiting_while_revoked=len(waiting),
           max_calls_per_user_minute=max(worst.values()), budget=BUDGET,
           items=len(items), duplicates=len(result.duplicates) + len(result.double_inserts),
           lost=len(result.lost), orphans=len(result.orphans))
