"""Outbound sync: every qualifying KiviCare appointment gets exactly one Google event with Meet.

Three single-step jobs, each safe to run in several processes at once:

* :meth:`OutboundSync.scan_new` — a primary-key range scan past a cursor notices new bookings
  within a poll interval and starts tracking the telemedicine ones;
* :meth:`OutboundSync.reconcile` — compares the upcoming window (and tracked appointments that
  disappeared) against stored fingerprints and makes changed ones due;
* :meth:`OutboundSync.process_due` — claims due items under a lease and applies, per item,
  *decide then act*: read KiviCare, the mapping table and our item → one Google step → write the
  mapping row and the item's outcome in one transaction.

Exactly-once rests on deterministic client event ids (a retry after any crash gets 409 and adopts
the event), on the item's ``event_id`` being stored *before* the insert is sent, and on leases.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from sidecar import __version__
from sidecar import google_api as g
from sidecar.appointments import (
    AppointmentFacts,
    AppointmentReader,
    MappingRow,
    facts_fingerprint,
)
from sidecar.meetings import (
    AppointmentDataError,
    appointment_window,
    build_event_body,
    classify,
    conference_request_id,
    event_id_for,
    extract_meet,
    is_valid_mapping_row,
    site_key_for,
    time_patch,
)
from sidecar.state import Item
from sidecar.sync.mapping import MappingWriter
from sidecar.timezones import ResolvedZone

log = logging.getLogger(__name__)

CURSOR_LAST_ID = "outbound.last_appointment_id"
#: the day digests of the last completed reconcile (any process): a restart compares against
#: them instead of loading the whole window
CURSOR_DIGESTS = "outbound.window_digests"
#: seconds between polls of a pending conference; bounded, then a new create request
CONFERENCE_POLL_DELAYS = (0.5, 0.7, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
#: while items are in flight and the queue looked empty, how often process_due looks again
RECHECK_SECONDS = 0.05
#: bump when the fingerprint or the day digest changes meaning (stored digests are then unused)
DIGEST_FORMAT = 1
RETRY_BASE_SECONDS = 2.0
RETRY_MAX_SECONDS = 900.0
PERMANENT_FAILURE_RETRY = timedelta(hours=6)

CalendarFactory = Callable[[int], g.CalendarClient]


@dataclass(frozen=True)
class _Context:
    """What items of one claim are decided on, read together just before they are worked."""

    facts: dict[int, AppointmentFacts]
    rows: dict[int, list[MappingRow]]
    statuses: dict[int, str]
    site_zone: ResolvedZone
    addon_active: bool
    created_at: dict[int, datetime]


@dataclass(frozen=True)
class _WindowDigests:
    context: tuple[int, ...]
    days: dict[date, tuple[int, int]]

    def dump(self, settings_key: str) -> str:
        return json.dumps({"v": settings_key, "context": list(self.context),
                           "days": {d.isoformat(): list(v) for d, v in self.days.items()}})

    @classmethod
    def load(cls, raw: str | None, settings_key: str) -> _WindowDigests | None:
        """Digests stored by an earlier reconcile, or None when absent, unreadable or made
        under other settings or another version (then everything is compared)."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
            if data.get("v") != settings_key:
                return None
            return cls(tuple(int(x) for x in data["context"]),
                       {date.fromisoformat(d): (int(v[0]), int(v[1]))
                        for d, v in data["days"].items()})
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return None


@dataclass
class CycleResult:
    """What one job run did; ``failed`` counts items parked as failed in this run."""

    scanned: int = 0
    queued: int = 0
    processed: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    retried: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: CycleResult) -> None:
        for name in ("scanned", "queued", "processed", "created", "updated", "deleted", "failed",
                     "retried", "waiting"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)


class _Reschedule(Exception):
    """Internal: finish this item now and look at it again after ``delay`` seconds."""

    def __init__(self, delay: float, state: str, **fields: Any) -> None:
        super().__init__(state)
        self.delay = delay
        self.state = state
        self.fields = fields


class OutboundSync:
    def __init__(
        self,
        runtime: Any,
        calendar_for: CalendarFactory,
        *,
        worker_id: str | None = None,
        max_workers: int = 8,
        lease_seconds: float = 120.0,
        batch_size: int = 200,
        rng: random.Random | None = None,
        full_reconcile_every: int = 60,
        per_doctor: int = 1,
    ) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.engine: sa.Engine = runtime.engine
        self.state = runtime.state
        self.clock = runtime.clock
        self.metrics = runtime.metrics
        self.accounts = runtime.accounts
        self.reader = AppointmentReader(runtime.schema)
        self.mappings = MappingWriter(runtime.schema)
        self.calendar_for = calendar_for
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.max_workers = max_workers
        #: items of one doctor worked at the same time, in this process and (softly, through
        #: the claim) across replicas; never one appointment twice: that is the leases' job
        self.per_doctor = max(1, per_doctor)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_guard = threading.Lock()
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size
        self.rng = rng or random.Random()
        #: every Nth reconcile compares the whole window even when no digest changed
        self.full_reconcile_every = full_reconcile_every
        self._digests: _WindowDigests | None = None
        self._reconciles = 0
        names = runtime.names
        # Event ids derive from the site key; it is fixed at first start so that a later move
        # of the site (new domain, https) cannot change the ids of existing meetings.
        self.site_key = self.state.get_or_create_cursor(
            "site_key",
            lambda: site_key_for(runtime.site_url or "localhost", names.blog_id,
                                 names.base_prefix))

    # ------------------------------------------------------------------ noticing changes
    def now(self) -> datetime:
        return self.clock.now()

    def scan_new(self) -> CycleResult:
        """Track appointments booked since the last scan (cursor = highest id seen)."""
        result = CycleResult()
        now = self.now()
        with self.engine.connect() as conn:
            raw = self.state.get_cursor(CURSOR_LAST_ID, conn=conn)
            if raw is None:
                # First start: history is not ours to scan; the upcoming-window reconcile
                # picks up every upcoming appointment that already exists.
                start = self.reader.max_id(conn)
                self.state.set_cursor(CURSOR_LAST_ID, str(start), conn=conn)
                conn.commit()
                return result
            last = int(raw)
            while True:
                ids = self.reader.ids_after(conn, last, self.batch_size)
                if not ids:
                    break
                facts = self.reader.load(conn, ids)
                result.scanned += len(ids)
                for appt_id in ids:
                    f = facts.get(appt_id)
                    if f is not None and f.telemed and self.state.ensure_item(
                            appt_id, f.appointment.doctor_id, now=now, conn=conn):
                        result.queued += 1
                last = ids[-1]
                self.state.set_cursor(CURSOR_LAST_ID, str(last), conn=conn)
                conn.commit()
                if len(ids) < self.batch_size:
                    break
        return result

    def window(self, site_today: date) -> tuple[date, date]:
        # One day of slack before today covers zones ahead of the site's.
        return site_today - timedelta(days=1), site_today + timedelta(
            days=self.settings.sync.upcoming_days)

    def reconcile(self, *, full: bool = False) -> CycleResult:
        """Make due every tracked or telemed upcoming appointment whose fingerprint changed,
        and every tracked appointment whose row is gone; wake items of reconnected doctors.

        On MariaDB/MySQL the database digests each day of the window (appointment rows,
        service links, our items' state and fingerprint) and what events take from other
        tables (names, services, zones); only days whose digest differs from the last
        completed reconcile are loaded and compared. Those digests are stored with the
        reconcile's work (``CURSOR_DIGESTS``), so a restarted process or another replica
        starts from them. Every ``full_reconcile_every``-th reconcile, ``full=True``, no usable
        stored digests (none yet, other fingerprint settings, another version), a changed
        context digest or a database without digests look at every day.
        """
        result = CycleResult()
        now = self.now()
        self._reconciles += 1
        if self.full_reconcile_every > 0 and self._reconciles % self.full_reconcile_every == 0:
            full = True
        with self.engine.connect() as conn:
            site_zone = self.reader.site_zone(conn)
            first, last = self.window(now.astimezone(site_zone.tzinfo).date())
            digests: _WindowDigests | None = None
            if self.reader.digests_supported(conn):
                digests = _WindowDigests(
                    self.reader.context_digest(conn),
                    self.reader.day_digests(conn, first, last, self.state.tables.items))
            known = self._digests
            if known is None and digests is not None and not full:
                known = _WindowDigests.load(self.state.get_cursor(CURSOR_DIGESTS, conn=conn),
                                            self._digest_settings_key())
            if full or digests is None or known is None or known.context != digests.context:
                ids = self.reader.ids_starting_between(conn, first, last)
            else:
                changed = [d for d, h in digests.days.items() if known.days.get(d) != h]
                ids = self.reader.ids_starting_on(conn, changed) if changed else []
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                facts = self.reader.load(conn, chunk)
                items = self.state.get_items(chunk, conn=conn)
                new: list[tuple[int, int]] = []
                for appt_id, f in facts.items():
                    item = items.get(appt_id)
                    result.scanned += 1
                    if item is None:
                        if f.telemed:
                            new.append((appt_id, f.appointment.doctor_id))
                        continue
                    if item.fingerprint != self._fingerprint(f) and item.state in (
                            "synced", "done"):
                        self.state.requeue(appt_id, now=now, conn=conn)
                        result.queued += 1
                self.state.ensure_items(new, now=now, conn=conn)
                result.queued += len(new)
                conn.commit()
            result.queued += self._requeue_vanished(conn, now)
            result.queued += self._requeue_reconnected(conn, now)
            # Stored with the work: digests were read before the loads, so a change made in
            # between shows up as a differing digest next time, never as a miss.
            if digests is not None:
                self.state.set_cursor(CURSOR_DIGESTS,
                                      digests.dump(self._digest_settings_key()), conn=conn)
            conn.commit()
        self._digests = digests
        return result

    def _digest_settings_key(self) -> str:
        """What stored digests are valid for: the settings that shape fingerprints, and the
        version of the code that computes fingerprints and digests."""
        sync = self.settings.sync
        shaping = "|".join((sync.summary_template, sync.description_template, sync.attendees,
                            str(sync.upcoming_days)))
        return f"{__version__}:{DIGEST_FORMAT}:" + hashlib.sha256(shaping.encode()).hexdigest()

    def _requeue_vanished(self, conn: sa.Connection, now: datetime) -> int:
        t = self.state.tables.items
        a = self.reader.appts
        gone = [
            int(r[0]) for r in conn.execute(
                sa.select(t.c.appointment_id)
                .select_from(t.outerjoin(a, a.c.id == t.c.appointment_id))
                .where(t.c.event_id.is_not(None),
                       t.c.state.in_(("synced", "awaiting_conference")), a.c.id.is_(None))
            )
        ]
        for appt_id in gone:
            self.state.requeue(appt_id, now=now, state="deleting", conn=conn)
        return len(gone)

    def _requeue_reconnected(self, conn: sa.Connection, now: datetime) -> int:
        t = self.state.tables.items
        doctors = {int(r[0]) for r in conn.execute(
            sa.select(t.c.doctor_id).where(t.c.state == "waiting_reconnect").distinct())}
        if not doctors:
            return 0
        statuses = self.accounts.connection_statuses(conn, doctors)
        return sum(self.state.requeue_doctor(d, now=now, conn=conn)
                   for d in doctors if statuses.get(d) == "connected")

    def _fingerprint(self, f: AppointmentFacts) -> str:
        return facts_fingerprint(f, self.settings.sync)

    # ------------------------------------------------------------------ doing the work
    def process_due(self, limit: int | None = None) -> CycleResult:
        """Claim due items and process them on up to ``max_workers`` threads, at most
        ``per_doctor`` of one doctor's items at a time (1: a doctor's items in order).

        Claims are topped up as workers free up (no batch barrier), and what an item needs
        from the database before acting is read for a whole claim at once (:class:`_Context`).
        """
        total = CycleResult()
        if self.max_workers <= 1:
            while True:
                want = self.batch_size if limit is None else min(self.batch_size,
                                                                 limit - total.processed)
                if want <= 0:
                    break
                claims = self._claim(want)
                if not claims:
                    break
                ctx = self._context(claims)
                for item in claims:
                    total.merge(self.process_item(item, ctx))
                if len(claims) < want:
                    break
            return total
        pool = self._executor()
        backlog: deque[tuple[Item, _Context]] = deque()
        inflight: dict[Future[CycleResult], Item] = {}
        busy: Counter[int] = Counter()
        claimed, more, cap = 0, True, 2 * self.max_workers
        recheck_at = 0.0
        while True:
            room = cap - len(inflight) - len(backlog)
            if limit is not None:
                room = min(room, limit - claimed)
            # With a limit (the scheduler's drain rounds): once the queue looked empty, look
            # again every RECHECK_SECONDS while items are in flight, so bookings noticed
            # meanwhile start at once instead of after this round. Without one, a run works
            # what was due when it looked (an item that keeps rescheduling itself at once
            # cannot keep it going).
            recheck = (limit is not None and not more and bool(inflight) and room > 0
                       and time.monotonic() >= recheck_at)
            if recheck or (more and room > 0
                           and (room >= self.max_workers or not (inflight or backlog))):
                want = min(self.batch_size, room)
                claims = self._claim(want)
                claimed += len(claims)
                if claims:
                    ctx = self._context(claims)
                    backlog.extend((item, ctx) for item in claims)
                more = len(claims) >= want and (limit is None or claimed < limit)
                if not more:
                    recheck_at = time.monotonic() + RECHECK_SECONDS
            waiting: list[tuple[Item, _Context]] = []
            while backlog and len(inflight) < self.max_workers:
                item, ctx = backlog.popleft()
                if busy[item.doctor_id] >= self.per_doctor:
                    waiting.append((item, ctx))
                    continue
                busy[item.doctor_id] += 1
                inflight[pool.submit(self.process_item, item, ctx)] = item
            backlog.extendleft(reversed(waiting))
            if not inflight:
                if more:
                    continue
                break
            timeout = None if more or limit is None else max(0.0, recheck_at - time.monotonic())
            done, _ = wait(inflight, timeout=timeout, return_when=FIRST_COMPLETED)
            for fut in done:
                item = inflight.pop(fut)
                busy[item.doctor_id] -= 1
                total.merge(fut.result())
        return total

    def _claim(self, want: int) -> list[Item]:
        # Doctors that other replicas are already working at full concurrency are skipped.
        return self.state.claim_due_items(self.now(), want, self.worker_id, self.lease_seconds,
                                          per_doctor=self.per_doctor)

    def _executor(self) -> ThreadPoolExecutor:
        """One pool per engine, reused across runs (threads keep their HTTP connections)."""
        with self._pool_guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_workers,
                                                thread_name_prefix="kcsc-outbound")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads (idle ones exit at once; running items finish)."""
        with self._pool_guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _context(self, claims: list[Item]) -> _Context:
        """The reads every item of a claim needs, in one connection and one query per table."""
        ids = [c.appointment_id for c in claims]
        with self.engine.connect() as conn:
            facts = self.reader.load(conn, ids)
            doctors = {c.doctor_id for c in claims} | {
                f.appointment.doctor_id for f in facts.values()}
            return _Context(
                facts=facts,
                rows=self.reader.mapping_rows(conn, ids),
                statuses=self.accounts.connection_statuses(conn, doctors),
                site_zone=self.reader.site_zone(conn),
                addon_active=self._addon_active(conn) if facts else False,
                created_at=self._created_at_many(conn, list(facts)),
            )

    def process_item(self, claim: Item, context: _Context | None = None) -> CycleResult:
        """Bring one claimed appointment's Google side in line; never raises. ``context``:
        the claim's reads made by :meth:`process_due` (read now when omitted)."""
        result = CycleResult(processed=1)
        now = self.now()
        extra = {"appointment_id": claim.appointment_id, "doctor_id": claim.doctor_id}
        try:
            self._apply(claim, result, context)
        except _Reschedule as again:
            self.state.release(claim, now=now, state=again.state,
                               next_attempt_at=now + timedelta(seconds=again.delay),
                               **again.fields)
        except g.AuthRevoked as err:
            result.waiting += 1
            # Expected while a doctor is not connected; accounts logs the disconnect itself once.
            log.info("appointment %s waits for its doctor to reconnect: %s",
                     claim.appointment_id, err, extra=extra)
            self.state.mark_waiting_reconnect(claim, now=now, error=f"{type(err).__name__}: {err}")
        except (g.RateLimited, g.Transient, g.QuotaExceeded) as err:
            result.retried += 1
            delay = self._retry_delay(claim.attempts, getattr(err, "retry_after", None),
                                      slow=isinstance(err, g.QuotaExceeded))
            self.metrics.google_retries.labels(reason=type(err).__name__).inc()
            log.info("appointment %s: %s, retry in %.1fs", claim.appointment_id,
                     type(err).__name__, delay, extra=extra)
            self.state.mark_retry(claim, now=now, error=f"{type(err).__name__}: {err}",
                                  delay=timedelta(seconds=delay))
        except (g.GoogleError, AppointmentDataError) as err:
            result.failed += 1
            result.errors.append(f"appointment {claim.appointment_id}: {err}")
            self.metrics.items_failed.inc()
            log.error("appointment %s failed: %s", claim.appointment_id, err, extra=extra)
            self.state.mark_failed(claim, now=now, error=f"{type(err).__name__}: {err}")
        except sa.exc.SQLAlchemyError as err:
            # The database went away mid-item: the lease expires and the item is retried.
            result.retried += 1
            log.warning("appointment %s: database error %s; will retry",
                        claim.appointment_id, type(err).__name__, extra=extra)
        except Exception as err:  # never lose an item to a bug: keep it queued with the error
            result.retried += 1
            log.exception("appointment %s: unexpected %s", claim.appointment_id,
                          type(err).__name__, extra=extra)
            self.state.mark_retry(claim, now=now, error=f"{type(err).__name__}: {err}",
                                  delay=timedelta(seconds=self._retry_delay(claim.attempts)))
        return result

    def _retry_delay(self, attempts: int, retry_after: float | None = None,
                     slow: bool = False) -> float:
        base = RETRY_BASE_SECONDS * (2 ** min(attempts, 12)) * (8 if slow else 1)
        delay = min(RETRY_MAX_SECONDS, base) * (0.5 + self.rng.random() / 2)
        return max(delay, retry_after or 0.0)

    # ---------------------------------------------------------------- decide, then act
    def _apply(self, claim: Item, result: CycleResult, ctx: _Context | None = None) -> None:
        now = self.now()
        if ctx is None:
            ctx = self._context([claim])
        facts = ctx.facts.get(claim.appointment_id)
        rows = ctx.rows.get(claim.appointment_id, [])
        site_zone = ctx.site_zone
        doctor_id = facts.appointment.doctor_id if facts else claim.doctor_id
        connected = ctx.statuses.get(doctor_id) == "connected"
        addon_active = ctx.addon_active if facts else False
        created_at = ctx.created_at.get(claim.appointment_id) if facts else None

        valid_rows = [r for r in rows if is_valid_mapping_row(r.event_id, r.url)]
        if facts is None:
            self._ensure_absent(claim, rows, result, reason="appointment deleted")
            return
        _start, end = appointment_window(facts.appointment, facts.zone)
        desired = classify(facts.appointment.status, end.astimezone(UTC) <= now)
        if desired == "present" and not facts.telemed:
            desired = "absent"
        fp = self._fingerprint(facts)
        if desired in ("wait", "leave"):
            self.state.mark_done(claim, now=now, fingerprint=fp,
                                 doctor_id=facts.appointment.doctor_id)
            return
        if desired == "absent":
            self._ensure_absent(claim, rows, result, reason="appointment cancelled",
                                fingerprint=fp)
            return
        if not connected:
            raise g.AuthRevoked(f"doctor {doctor_id} is not connected", reason="not_connected")
        self._ensure_present(claim, facts, valid_rows, rows, fp, site_zone, result,
                             addon_active=addon_active, created_at=created_at)

    def _addon_active(self, conn: sa.Connection) -> bool:
        active = self.reader.options.get(conn, "active_plugins") or []
        values = active.values() if isinstance(active, dict) else active
        return any(isinstance(v, str) and v.startswith("kivicare-google-meet/") for v in values)

    def _created_at_many(self, conn: sa.Connection, ids: list[int]) -> dict[int, datetime]:
        a = self.reader.appts
        if "created_at" not in a.c or not ids:
            return {}
        out: dict[int, datetime] = {}
        for start in range(0, len(ids), 500):
            for appt_id, value in conn.execute(sa.select(a.c.id, a.c.created_at).where(
                    a.c.id.in_(ids[start : start + 500]))):
                if isinstance(value, datetime):
                    out[int(appt_id)] = value
        return out

    def _ensure_absent(self, claim: Item, rows: list[MappingRow], result: CycleResult, *,
                       reason: str, fingerprint: str | None = None) -> None:
        """Delete our event (and any mapped one) and the mapping rows; item done."""
        now = self.now()
        calendar_doctor = claim.calendar_doctor_id or claim.doctor_id
        event_ids = {claim.event_id} if claim.event_id else set()
        event_ids.update(r.event_id for r in rows if is_valid_mapping_row(r.event_id, r.url))
        if event_ids:
            with self.engine.connect() as conn:
                connected = self.accounts.connection_status(conn, calendar_doctor) == "connected"
            if not connected:
                raise g.AuthRevoked(f"doctor {calendar_doctor} is not connected",
                                    reason="not_connected")
            cal = self.calendar_for(calendar_doctor)
            for event_id in sorted(event_ids):
                try:
                    cal.delete_event("primary", event_id,
                                     send_updates=self.settings.sync.send_updates)
                    result.deleted += 1
                    self.metrics.meetings_deleted.inc()
                except (g.Gone, g.NotFound):
                    pass  # already deleted (by us earlier, by PHP, or in Google): success
        with self.engine.begin() as conn:
            self.mappings.delete_for(conn, claim.appointment_id)
            fields: dict[str, Any] = {"event_id": None, "calendar_doctor_id": None}
            if claim.event_id:
                fields["event_version"] = claim.event_version + 1
            if fingerprint is not None:
                fields["fingerprint"] = fingerprint
            self.state.mark_done(claim, now=now, conn=conn, **fields)
        if event_ids:
            log.info("appointment %s: event removed (%s)", claim.appointment_id, reason,
                     extra={"appointment_id": claim.appointment_id})

    def _ensure_present(
        self,
        claim: Item,
        facts: AppointmentFacts,
        valid_rows: list[MappingRow],
        rows: list[MappingRow],
        fp: str,
        site_zone: ResolvedZone,
        result: CycleResult,
        *,
        addon_active: bool,
        created_at: datetime | None,
    ) -> None:
        appt = facts.appointment
        doctor_id = appt.doctor_id
        event_id = claim.event_id
        version = claim.event_version
        # Doctor changed: the event moves to the new doctor's calendar.
        if event_id and claim.calendar_doctor_id and claim.calendar_doctor_id != doctor_id:
            self._move_off_old_calendar(claim, result)
            event_id, version = None, version + 1
            valid_rows = []
        # Adopt a valid row written by PHP (or by us before a crash).
        if valid_rows and valid_rows[0].event_id != event_id:
            event_id = valid_rows[0].event_id
            self.state.log_event("adopt", appointment_id=appt.id, doctor_id=doctor_id,
                                 event_id=event_id, detail="existing mapping row")
        cal = self.calendar_for(doctor_id)
        event: dict[str, Any] | None = None
        touched = result.created + result.updated
        if event_id is None:
            if addon_active and not rows and created_at is not None:
                wait = self._settle_wait(created_at, site_zone)
                if wait > 0:
                    raise _Reschedule(wait, "pending", doctor_id=doctor_id)
            event_id = event_id_for(self.site_key, appt.id, version)
            # Remember the id before sending: a crash after Google's insert leads to a 409
            # on retry, and the existing event is adopted instead of duplicated.
            self.state.upsert_item(appt.id, event_id=event_id, event_version=version,
                                   calendar_doctor_id=doctor_id, doctor_id=doctor_id,
                                   state="creating")
            event = self._insert(cal, facts, event_id, claim.conference_attempt, result)
            if event is None:  # the id was burnt by a deleted event: next version, now
                raise _Reschedule(0, "pending", event_id=None, event_version=version + 1)
        else:
            try:
                event = cal.get_event("primary", event_id)
            except (g.NotFound, g.Gone):
                event = None
            if event is None or event.get("status") == "cancelled":
                # Gone in Google while KiviCare still wants it: a new event, new id version.
                self.state.log_event("recreate", appointment_id=appt.id, doctor_id=doctor_id,
                                     event_id=event_id, detail="event missing in Google")
                # The row points at a dead event: drop it, or it would be adopted again.
                with self.engine.begin() as conn:
                    self.mappings.delete_for(conn, appt.id)
                raise _Reschedule(0, "pending", event_id=None, event_version=version + 1,
                                  calendar_doctor_id=None)
            if claim.fingerprint != fp or not self._times_match(event, facts):
                event = self._patch(cal, facts, event, result)
        # What Google holds now: the body of ``fp`` when this run inserted or patched the
        # event, else what the item recorded. Kept while the conference is pending, so the
        # polls that follow read the event (one call) instead of patching it again.
        held = fp if result.created + result.updated > touched else claim.fingerprint
        meet = extract_meet(event)
        if meet.status == "pending" or meet.status == "none":
            polls = claim.attempts if claim.state == "awaiting_conference" else 0
            if polls >= len(CONFERENCE_POLL_DELAYS):
                event = self._new_conference(cal, event, claim.conference_attempt + 1)
                raise _Reschedule(CONFERENCE_POLL_DELAYS[0], "awaiting_conference",
                                  event_id=event_id, calendar_doctor_id=doctor_id,
                                  conference_attempt=claim.conference_attempt + 1, attempts=0,
                                  fingerprint=held)
            if meet.status == "none":
                event = self._new_conference(cal, event, claim.conference_attempt)
            raise _Reschedule(CONFERENCE_POLL_DELAYS[polls], "awaiting_conference",
                              event_id=event_id, calendar_doctor_id=doctor_id,
                              attempts=polls + 1, fingerprint=held)
        if meet.status == "failure":
            self._new_conference(cal, event, claim.conference_attempt + 1)
            self.state.log_event("conference_retry", appointment_id=appt.id,
                                 doctor_id=doctor_id, event_id=event_id,
                                 detail="Meet creation failed; new request id")
            raise _Reschedule(CONFERENCE_POLL_DELAYS[0], "awaiting_conference",
                              event_id=event_id, calendar_doctor_id=doctor_id,
                              conference_attempt=claim.conference_attempt + 1, attempts=0,
                              last_error="Meet conference creation failed; retrying",
                              fingerprint=held)
        with self.engine.begin() as conn:
            self.mappings.write(conn, appt.id, event, now=self.now(), site_zone=site_zone)
            self.state.mark_synced(claim, now=self.now(), event_id=event_id, fingerprint=fp,
                                   conn=conn, calendar_doctor_id=doctor_id,
                                   doctor_id=doctor_id)

    def _settle_wait(self, created_at: datetime, site_zone: ResolvedZone) -> float:
        created = created_at.replace(tzinfo=site_zone.tzinfo) if created_at.tzinfo is None \
            else created_at
        ready = created + timedelta(seconds=self.settings.sync.settle_seconds)
        return (ready - self.now()).total_seconds()

    def _insert(self, cal: g.CalendarClient, facts: AppointmentFacts, event_id: str,
                conference_attempt: int, result: CycleResult) -> dict[str, Any] | None:
        """Insert, or adopt our own event after a 409; None when that id is a deleted event."""
        sync = self.settings.sync
        body = build_event_body(
            facts.appointment, facts.zone, event_id=event_id,
            summary_template=sync.summary_template,
            description_template=sync.description_template,
            attendees_policy=sync.attendees,  # type: ignore[arg-type]
            conference_attempt=conference_attempt,
        )
        send = sync.send_updates if sync.attendees != "none" else None
        try:
            event = cal.insert_event("primary", body, conference=True, send_updates=send)
        except g.Duplicate:
            event = cal.get_event("primary", event_id)
            if event.get("status") == "cancelled":
                return None
            self.state.log_event("adopt", appointment_id=facts.appointment.id,
                                 doctor_id=facts.appointment.doctor_id, event_id=event_id,
                                 detail="409 on insert: our event already exists")
            if not self._times_match(event, facts):
                event = self._patch(cal, facts, event, result)
            return event
        result.created += 1
        self.metrics.meetings_created.inc()
        return event

    def _patch(self, cal: g.CalendarClient, facts: AppointmentFacts, event: dict[str, Any],
               result: CycleResult) -> dict[str, Any]:
        sync = self.settings.sync
        full = build_event_body(
            facts.appointment, facts.zone, event_id=event["id"],
            summary_template=sync.summary_template,
            description_template=sync.description_template,
            attendees_policy=sync.attendees,  # type: ignore[arg-type]
            with_conference=False,
        )
        patch = {k: full[k] for k in ("summary", "description", "start", "end", "location",
                                      "attendees") if k in full}
        send = sync.send_updates if sync.attendees != "none" else None
        patched = cal.patch_event("primary", event["id"], patch, conference=True,
                                  send_updates=send)
        result.updated += 1
        self.metrics.meetings_updated.inc()
        return patched

    def _new_conference(self, cal: g.CalendarClient, event: dict[str, Any],
                        attempt: int) -> dict[str, Any]:
        body = {"conferenceData": {"createRequest": {
            "requestId": conference_request_id(event["id"], attempt),
            "conferenceSolutionKey": {"type": "hangoutsMeet"},
        }}}
        return cal.patch_event("primary", event["id"], body, conference=True)

    def _times_match(self, event: dict[str, Any], facts: AppointmentFacts) -> bool:
        want = time_patch(facts.appointment, facts.zone)
        for key in ("start", "end"):
            got = (event.get(key) or {}).get("dateTime")
            if not got:
                return False
            try:
                got_at = datetime.fromisoformat(got.replace("Z", "+00:00"))
                want_at = datetime.fromisoformat(want[key]["dateTime"].replace("Z", "+00:00"))
            except ValueError:
                return False
            if got_at != want_at:
                return False
        return True

    def _move_off_old_calendar(self, claim: Item, result: CycleResult) -> None:
        old = claim.calendar_doctor_id
        assert old is not None and claim.event_id is not None
        try:
            self.calendar_for(old).delete_event("primary", claim.event_id,
                                                send_updates=self.settings.sync.send_updates)
            result.deleted += 1
            self.metrics.meetings_deleted.inc()
        except (g.Gone, g.NotFound):
            pass
        except g.AuthRevoked:
            # The old doctor cannot be reached any more; their calendar is theirs to clean.
            self.state.log_event("orphaned", appointment_id=claim.appointment_id,
                                 doctor_id=old, event_id=claim.event_id,
                                 detail="doctor changed; old doctor not connected")
        with self.engine.begin() as conn:
            self.mappings.delete_for(conn, claim.appointment_id)
        self.state.log_event("moved", appointment_id=claim.appointment_id, doctor_id=old,
                             event_id=claim.event_id, detail="doctor changed")

    # ------------------------------------------------------------------ one full cycle
    def run_once(self) -> CycleResult:
        """scan → reconcile → process (``kc-sidecar sync-once`` and tests)."""
        total = CycleResult()
        total.merge(self.scan_new())
        total.merge(self.reconcile())
        total.merge(self.process_due())
        self.update_queue_metrics()
        return total

    def update_queue_metrics(self) -> None:
        counts = self.state.count_by_state()
        depth = sum(n for s, n in counts.items() if s in ("pending", "creating",
                                                         "awaiting_conference", "deleting"))
        t = self.state.tables.items
        with self.engine.connect() as conn:
            oldest = conn.execute(sa.select(sa.func.min(t.c.created_at)).where(
                t.c.state.in_(("pending", "creating", "awaiting_conference")))).scalar()
        age = 0.0
        if oldest is not None:
            oldest = oldest.replace(tzinfo=UTC) if oldest.tzinfo is None else oldest
            age = max(0.0, (self.now() - oldest).total_seconds())
        self.metrics.set_queue(depth, age)
