"""Inbound sync: changes made in Google Calendar to the events the sidecar owns.

One doctor's sync is the short loop of Google's sync guide: ``events.list`` with the stored
``syncToken``, every page, each page's changes applied, and the ``nextSyncToken`` of the last
page saved only after all of them were applied. A 410 ``fullSyncRequired`` drops the token and
lists again from one day ago (the first sync of a doctor does the same to obtain a token);
decisions compare Google with KiviCare, so listing an event twice changes nothing.

Only *owned* events are acted on: the event id is the ``event_id`` of the doctor's tracked item
(``kcsc_items``), or of an appointment's row in the add-on's mapping table. Everything else in
the calendar is ignored. For an owned event (:func:`decide`, pure; :meth:`InboundSync._apply`):

* Meet link or ``htmlLink`` changed → the mapping row is rewritten (``MappingWriter``); the
  Meet removed → the outbound item is requeued and gets a new conference;
* deleted/cancelled while KiviCare still wants it (booked, upcoming, telemed) → policy
  ``sync.google_deleted_policy``: ``recreate`` (the item is requeued with the next event-id
  version and no event id, so the outbound engine creates a new event and mapping) or
  ``unlink`` (the mapping row is removed, the item marked done, the decision logged);
* start/end differ from KiviCare → ``sync.google_moved_policy``: ``revert`` (the item is
  requeued; the outbound engine re-reads the event and patches the times back) or ``accept``
  (the appointment's local date/time columns, UTC columns and ``appointment_timezone`` are
  rewritten together and the item's fingerprint updated so outbound does not undo it).

No ping-pong: an event the sidecar just wrote matches KiviCare and needs nothing; ``accept``
applies only when KiviCare did not change since the item was synced (otherwise the difference
is KiviCare's own change still on its way out, and outbound pushes it).

Work becomes due in two ways. A verified push notification marks the doctor *due* (a row
``inbound.due.<doctor>`` in ``kcsc_cursor``, so any process may pick it up, plus the in-process
:class:`InboundWorker`, which coalesces a burst of notifications into a few syncs off the
request thread). The polling fallback in :meth:`InboundSync.run_once` syncs every connected
doctor without a live channel each ``sync.inbound_poll_seconds`` (and, as a safety net against
lost notifications, doctors with one every ``SAFETY_POLL_FACTOR`` times that). One doctor is
synced by one process at a time (a named database lock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from sidecar import google_api as g
from sidecar.appointments import (
    AppointmentFacts,
    AppointmentReader,
    MappingRow,
    facts_fingerprint,
)
from sidecar.db import LockTimeout, named_lock
from sidecar.meetings import (
    AppointmentDataError,
    appointment_window,
    classify,
    extract_meet,
    is_valid_mapping_row,
    is_valid_url,
)
from sidecar.state import Channel, Item
from sidecar.sync.channels import CALENDAR_ID, ChannelManager, connected_doctors
from sidecar.sync.mapping import MappingWriter
from sidecar.timezones import rfc3339

log = logging.getLogger(__name__)

DUE_PREFIX = "inbound.due."
BACKOFF_PREFIX = "inbound.backoff."
FULL_SYNC_LOOKBACK = timedelta(days=1)
#: doctors with a live channel are still polled this many poll intervals apart
SAFETY_POLL_FACTOR = 12
BACKOFF_BASE_SECONDS = 5.0
LOCK_PREFIX = "kcsc_inbound_"

ActionKind = Literal["update_links", "requeue_meet", "recreate", "unlink", "revert", "accept"]


class InboundError(Exception):
    """Google answered something the incremental sync cannot continue from."""


@dataclass
class InboundResult:
    """What one run did; counts add up over doctors."""

    doctors: int = 0
    syncs: int = 0
    full_syncs: int = 0
    pages: int = 0
    events: int = 0
    owned: int = 0
    links_updated: int = 0
    recreated: int = 0
    unlinked: int = 0
    reverted: int = 0
    accepted: int = 0
    requeued: int = 0
    busy: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: InboundResult) -> None:
        for name in ("doctors", "syncs", "full_syncs", "pages", "events", "owned",
                     "links_updated", "recreated", "unlinked", "reverted", "accepted",
                     "requeued", "busy", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)


# --------------------------------------------------------------------------------------------
# Decide (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    appointment_id: int
    detail: str = ""
    start: datetime | None = None  # accept: the new window (aware)
    end: datetime | None = None


def _instant(when: object) -> datetime | None:
    if not isinstance(when, dict):
        return None
    text = when.get("dateTime")
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def event_window(event: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """The event's start and end instants; None for all-day or malformed times."""
    start, end = _instant(event.get("start")), _instant(event.get("end"))
    if start is None or end is None:
        return None
    return start, end


def decide(
    event: dict[str, Any],
    facts: AppointmentFacts | None,
    item: Item | None,
    row: MappingRow | None,
    *,
    calendar_doctor_id: int,
    now: datetime,
    current_fingerprint: str | None,
    deleted_policy: str,
    moved_policy: str,
) -> list[Action]:
    """What to do about one owned event in ``calendar_doctor_id``'s calendar, from Google's
    view, KiviCare's row, our item (None when only a mapping row names the event) and the
    mapping row. Never raises for bad appointment data: []."""
    if facts is None:
        return []  # the appointment is gone: outbound deletes the event
    appt = facts.appointment
    if appt.doctor_id != calendar_doctor_id:
        return []  # the appointment moved to another doctor: outbound moves the event
    try:
        start, end = appointment_window(appt, facts.zone)
    except AppointmentDataError:
        return []
    wanted = classify(appt.status, end.astimezone(UTC) <= now)
    if wanted != "present" or not facts.telemed:
        return []  # KiviCare does not want an event (any more): outbound's business
    if event.get("status") == "cancelled":
        if deleted_policy == "unlink":
            return [Action("unlink", appt.id, "event deleted in Google; meeting unlinked")]
        return [Action("recreate", appt.id, "event deleted in Google; new event requested")]
    actions: list[Action] = []
    window = event_window(event)
    moved = window is None or window[0] != start or window[1] != end
    in_sync = (item is not None and item.state == "synced"
               and item.fingerprint == current_fingerprint)
    if moved:
        if item is not None and not in_sync:
            # KiviCare changed since the last sync (or outbound is busy with the item): the
            # difference is KiviCare's own change on its way out, not an edit in Google.
            return actions
        if moved_policy == "accept" and window is not None and in_sync:
            actions.append(Action("accept", appt.id, "event moved in Google; accepted",
                                  start=window[0], end=window[1]))
            return actions
        actions.append(Action("revert", appt.id, "event moved in Google; reverted"))
        return actions
    if item is not None and item.state != "synced":
        return actions  # outbound is working on it and writes the mapping row itself
    meet = extract_meet(event)
    if meet.status != "success":
        actions.append(Action("requeue_meet", appt.id, f"Meet conference {meet.status}"))
        return actions
    html_link = meet.html_link if is_valid_url(meet.html_link) else None
    if row is not None and (row.url != meet.url or (row.event_url or None) != html_link):
        actions.append(Action("update_links", appt.id, "Meet link or htmlLink changed"))
    return actions


# --------------------------------------------------------------------------------------------
# Apply, per doctor
# --------------------------------------------------------------------------------------------


class InboundSync:
    """Incremental sync of Google-side changes for every connected doctor."""

    def __init__(self, runtime: Any, calendar_for: Any = None, *,
                 channels: ChannelManager | None = None, page_size: int | None = None,
                 lock_timeout: float = 0.0) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.engine: sa.Engine = runtime.engine
        self.state = runtime.state
        self.clock = runtime.clock
        self.metrics = runtime.metrics
        self.reader = AppointmentReader(runtime.schema)
        self.mappings = MappingWriter(runtime.schema)
        self._calendar_for = calendar_for
        self.channels = channels or ChannelManager(runtime, calendar_for)
        self.page_size = page_size
        self.lock_timeout = lock_timeout

    def now(self) -> datetime:
        return self.clock.now()

    def calendar_for(self, doctor_id: int) -> g.CalendarClient:
        factory = self._calendar_for or self.rt.google_factory
        return factory(doctor_id)  # type: ignore[no-any-return]

    # -- due flags -------------------------------------------------------------------------

    def mark_due(self, doctor_id: int) -> None:
        """Record that the doctor's calendar changed (idempotent: one row per doctor)."""
        self.state.get_or_create_cursor(f"{DUE_PREFIX}{int(doctor_id)}",
                                        lambda: self.now().isoformat())

    def due_doctors(self) -> list[int]:
        t = self.state.tables.cursor
        with self.engine.connect() as conn:
            names = conn.execute(sa.select(t.c.name).where(t.c.name.like(DUE_PREFIX + "%")))
            out = []
            for (name,) in names:
                try:
                    out.append(int(name[len(DUE_PREFIX):]))
                except ValueError:
                    continue
        return sorted(out)

    def _take_due(self, doctor_id: int) -> bool:
        t = self.state.tables.cursor
        with self.engine.begin() as conn:
            return conn.execute(
                sa.delete(t).where(t.c.name == f"{DUE_PREFIX}{int(doctor_id)}")).rowcount > 0

    def _backoff_until(self, doctor_id: int) -> tuple[datetime | None, int]:
        raw = self.state.get_cursor(f"{BACKOFF_PREFIX}{int(doctor_id)}")
        if not raw:
            return None, 0
        when, _, count = raw.partition("|")
        try:
            return datetime.fromisoformat(when), int(count or 0)
        except ValueError:
            return None, 0

    def _set_backoff(self, doctor_id: int) -> None:
        _, failures = self._backoff_until(doctor_id)
        delay = min(float(self.settings.sync.inbound_poll_seconds),
                    BACKOFF_BASE_SECONDS * 2 ** min(failures, 16))
        until = self.now() + timedelta(seconds=delay)
        self.state.set_cursor(f"{BACKOFF_PREFIX}{int(doctor_id)}",
                              f"{until.isoformat()}|{failures + 1}")

    def _clear_backoff(self, doctor_id: int) -> None:
        t = self.state.tables.cursor
        with self.engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.name == f"{BACKOFF_PREFIX}{int(doctor_id)}"))

    # -- jobs --------------------------------------------------------------------------------

    def run_due(self, doctor_ids: Iterable[int] | None = None) -> InboundResult:
        """Sync the doctors marked due (or the given ones); disconnected ones are dropped."""
        result = InboundResult()
        wanted = set(self.due_doctors() if doctor_ids is None else doctor_ids)
        if not wanted:
            return result
        connected = set(connected_doctors(self.rt))
        for doctor_id in sorted(wanted):
            if doctor_id not in connected:
                self._take_due(doctor_id)  # a disconnected doctor costs no Google call
                continue
            result.merge(self.sync_doctor(doctor_id))
        return result

    def run_once(self) -> InboundResult:
        """The scheduler job: doctors marked due, plus the polling fallback."""
        result = InboundResult()
        now = self.now()
        connected = connected_doctors(self.rt)
        due = set(self.due_doctors())
        for doctor_id in due - set(connected):
            self._take_due(doctor_id)
        for doctor_id in connected:
            if doctor_id in due or self.poll_due(doctor_id, now):
                result.merge(self.sync_doctor(doctor_id))
        return result

    def poll_due(self, doctor_id: int, now: datetime) -> bool:
        """Whether the polling fallback should sync this doctor now."""
        backoff, _ = self._backoff_until(doctor_id)
        if backoff is not None and now < backoff:
            return False
        doctor = self.state.get_doctor(doctor_id)
        last = doctor.last_sync_at if doctor is not None else None
        if last is None or not (doctor and doctor.sync_token):
            return True
        interval = float(self.settings.sync.inbound_poll_seconds)
        if self.channels.has_live_channel(doctor_id, now):
            interval *= SAFETY_POLL_FACTOR
        return (now - last).total_seconds() >= interval

    def sync_doctor(self, doctor_id: int) -> InboundResult:
        """One doctor's incremental sync; never raises. Another process syncing the same
        doctor right now → ``busy`` (its due flag stays for the next run)."""
        result = InboundResult(doctors=1)
        try:
            with named_lock(self.engine, f"{LOCK_PREFIX}{int(doctor_id)}", self.lock_timeout):
                self._take_due(doctor_id)
                try:
                    self._sync_locked(doctor_id, result)
                except g.AuthRevoked as err:
                    log.warning("doctor %s: inbound sync stopped, must reconnect (%s)",
                                doctor_id, type(err).__name__)
                    result.failed += 1
                    result.errors.append(f"doctor {doctor_id}: {type(err).__name__}")
                except (g.GoogleError, InboundError, sa.exc.SQLAlchemyError) as err:
                    result.failed += 1
                    result.errors.append(f"doctor {doctor_id}: {type(err).__name__}: {err}")
                    log.warning("doctor %s: inbound sync failed (%s); will retry", doctor_id,
                                type(err).__name__)
                    self._set_backoff(doctor_id)
                else:
                    self._clear_backoff(doctor_id)
        except LockTimeout:
            result.busy += 1
        return result

    def _sync_locked(self, doctor_id: int, result: InboundResult) -> None:
        doctor = self.state.get_doctor(doctor_id)
        token = doctor.sync_token if doctor is not None else None
        cal = self.calendar_for(doctor_id)
        if token is None:
            result.full_syncs += 1
        try:
            next_token = self._pass(cal, doctor_id, token, result)
        except (g.SyncTokenExpired, g.Permanent) as err:
            # 410 is Google's documented answer; a 400 naming a token we stored (e.g. from an
            # account that was reset) is just as unusable: both mean "list everything again".
            if isinstance(err, g.Permanent) and (token is None or err.status != 400):
                raise
            log.info("doctor %s: sync token unusable (%s); full resync from %s", doctor_id,
                     err.status, rfc3339(self.now() - FULL_SYNC_LOOKBACK))
            self.state.set_sync_token(doctor_id, None, now=self.now())
            result.full_syncs += 1
            next_token = self._pass(cal, doctor_id, None, result)
        # Every change on every page was applied: only now the token moves on.
        self.state.set_sync_token(doctor_id, next_token, now=self.now())
        result.syncs += 1

    def _pass(self, cal: g.CalendarClient, doctor_id: int, token: str | None,
              result: InboundResult) -> str:
        """List every page (incremental with ``token``, else bounded full) and apply each."""
        time_min = None if token else rfc3339(
            (self.now() - FULL_SYNC_LOOKBACK).astimezone(UTC).replace(microsecond=0))
        page_token: str | None = None
        while True:
            page = cal.list_events(CALENDAR_ID, sync_token=token, page_token=page_token,
                                   time_min=time_min, max_results=self.page_size,
                                   show_deleted=True)
            result.pages += 1
            items = [e for e in page.get("items") or [] if isinstance(e, dict) and e.get("id")]
            result.events += len(items)
            self._apply_page(doctor_id, items, result)
            page_token = page.get("nextPageToken")
            if not page_token:
                next_token = page.get("nextSyncToken")
                if not next_token:
                    raise InboundError("the last page of events.list carried no nextSyncToken")
                return str(next_token)

    # -- one page ----------------------------------------------------------------------------

    def _owners(self, conn: sa.Connection, doctor_id: int, event_ids: Sequence[str]
                ) -> dict[str, tuple[int, bool]]:
        """event id → (appointment id, named by our item?) for the page's events we own:
        the event id of an item whose calendar is this doctor's, else of a mapping row."""
        t = self.state.tables.items
        out: dict[str, tuple[int, bool]] = {}
        rows = conn.execute(sa.select(t.c.appointment_id, t.c.event_id, t.c.doctor_id,
                                      t.c.calendar_doctor_id)
                            .where(t.c.event_id.in_(list(event_ids))))
        for r in rows:
            calendar_doctor = r.calendar_doctor_id if r.calendar_doctor_id is not None \
                else r.doctor_id
            if int(calendar_doctor) == doctor_id:
                out[str(r.event_id)] = (int(r.appointment_id), True)
        m = self.mappings.table
        for r in conn.execute(sa.select(m.c.appointment_id, m.c.event_id)
                              .where(m.c.event_id.in_(list(event_ids)))):
            out.setdefault(str(r.event_id), (int(r.appointment_id), False))
        return out

    def _apply_page(self, doctor_id: int, events: list[dict[str, Any]],
                    result: InboundResult) -> None:
        if not events:
            return
        with self.engine.connect() as conn:
            owners = self._owners(conn, doctor_id, [str(e["id"]) for e in events])
            if not owners:
                return
            appt_ids = sorted({a for a, _ in owners.values()})
            facts = self.reader.load(conn, appt_ids)
            rows = self.reader.mapping_rows(conn, appt_ids)
            items = self.state.get_items(appt_ids, conn=conn)
        now = self.now()
        sync = self.settings.sync
        for event in events:
            event_id = str(event["id"])
            owner = owners.get(event_id)
            if owner is None:
                continue
            appt_id, via_item = owner
            row = next((r for r in rows.get(appt_id, []) if r.event_id == event_id
                        and is_valid_mapping_row(r.event_id, r.url)), None)
            if not via_item and row is None:
                continue  # only a sentinel/invalid row names it
            result.owned += 1
            f = facts.get(appt_id)
            actions = decide(event, f, items.get(appt_id) if via_item else None, row,
                             calendar_doctor_id=doctor_id, now=now,
                             current_fingerprint=self._fingerprint(f) if f else None,
                             deleted_policy=sync.google_deleted_policy,
                             moved_policy=sync.google_moved_policy)
            for action in actions:
                self._apply(action, doctor_id, event, f, items.get(appt_id), result)

    def _fingerprint(self, f: AppointmentFacts) -> str:
        return facts_fingerprint(f, self.settings.sync)

    def _apply(self, action: Action, doctor_id: int, event: dict[str, Any],
               facts: AppointmentFacts | None, item: Item | None,
               result: InboundResult) -> None:
        now = self.now()
        appt_id = action.appointment_id
        event_id = str(event["id"])
        log_kw = {"appointment_id": appt_id, "doctor_id": doctor_id, "event_id": event_id,
                  "detail": action.detail}
        if action.kind == "update_links":
            with self.engine.begin() as conn:
                site_zone = self.reader.site_zone(conn)
                self.mappings.write(conn, appt_id, event, now=now, site_zone=site_zone)
                self.state.log_event("link_updated", now=now, conn=conn, **log_kw)
            result.links_updated += 1
        elif action.kind in ("requeue_meet", "revert"):
            with self.engine.begin() as conn:
                self._ensure_item(conn, appt_id, doctor_id, item, now)
                self.state.requeue(appt_id, now=now, conn=conn)
                if action.kind == "revert":
                    self.state.log_event("revert", now=now, conn=conn, **log_kw)
            if action.kind == "revert":
                result.reverted += 1
            else:
                result.requeued += 1
        elif action.kind == "recreate":
            with self.engine.begin() as conn:
                self.mappings.delete_for(conn, appt_id)
                self._ensure_item(conn, appt_id, doctor_id, item, now)
                if item is not None and item.event_id == event_id:
                    # The deleted id cannot be reused: the next deterministic version.
                    self.state.upsert_item(appt_id, now=now, conn=conn, event_id=None,
                                           event_version=item.event_version + 1,
                                           calendar_doctor_id=None, attempts=0,
                                           last_error=None)
                self.state.requeue(appt_id, now=now, conn=conn)
                self.state.log_event("recreate", now=now, conn=conn, **log_kw)
            result.recreated += 1
        elif action.kind == "unlink":
            with self.engine.begin() as conn:
                self.mappings.delete_for(conn, appt_id)
                self._ensure_item(conn, appt_id, doctor_id, item, now)
                fields: dict[str, Any] = {"state": "done", "next_attempt_at": None,
                                          "last_error": None}
                if facts is not None:
                    fields["fingerprint"] = self._fingerprint(facts)
                self.state.upsert_item(appt_id, now=now, conn=conn, **fields)
                self.state.log_event("unlink", now=now, conn=conn, **log_kw)
            result.unlinked += 1
        elif action.kind == "accept":
            assert facts is not None and action.start is not None and action.end is not None
            with self.engine.begin() as conn:
                self._move_appointment(conn, facts, action.start, action.end)
                moved = self.reader.load(conn, [appt_id]).get(appt_id)
                if moved is not None:
                    self.state.upsert_item(appt_id, now=now, conn=conn,
                                           fingerprint=self._fingerprint(moved))
                self.state.log_event("accept", now=now, conn=conn, **log_kw)
            result.accepted += 1
        log.info("appointment %s: %s (%s)", appt_id, action.kind, action.detail,
                 extra={"appointment_id": appt_id, "doctor_id": doctor_id})

    def _ensure_item(self, conn: sa.Connection, appt_id: int, doctor_id: int,
                     item: Item | None, now: datetime) -> None:
        if item is None:
            self.state.ensure_item(appt_id, doctor_id, now=now, conn=conn)

    def _move_appointment(self, conn: sa.Connection, facts: AppointmentFacts,
                          start: datetime, end: datetime) -> None:
        """Write the new window as KiviCare's model does: local columns in the appointment's
        zone, UTC columns and ``appointment_timezone`` together."""
        zone = facts.zone
        local_start = start.astimezone(zone.tzinfo)
        local_end = end.astimezone(zone.tzinfo)
        a = self.reader.appts
        values: dict[str, Any] = {
            "appointment_start_date": local_start.date(),
            "appointment_start_time": local_start.time().replace(tzinfo=None),
            "appointment_end_date": local_end.date(),
            "appointment_end_time": local_end.time().replace(tzinfo=None),
        }
        if self.rt.schema.has_utc_columns:
            values["appointment_start_utc"] = start.astimezone(UTC).replace(tzinfo=None)
            values["appointment_end_utc"] = end.astimezone(UTC).replace(tzinfo=None)
        if self.rt.schema.has_appointment_timezone:
            values["appointment_timezone"] = zone.label
        values = {k: v for k, v in values.items() if k in a.c}
        conn.execute(sa.update(a).where(a.c.id == facts.appointment.id).values(**values))


# --------------------------------------------------------------------------------------------
# The in-process worker behind the webhook
# --------------------------------------------------------------------------------------------


class InboundWorker:
    """Runs notified doctors' syncs off the request thread, coalescing bursts.

    :meth:`notify` costs no Google call: the first notification of a doctor since the last
    round marks the doctor due in the database and wakes the thread; the rest are dropped
    (``coalesced``). A round syncs every pending doctor; rounds are at least ``min_interval``
    seconds apart, so a storm of notifications costs about one sync per interval. Tests drive
    :meth:`run_pending` directly or start the thread and use :meth:`wait_idle`.
    """

    def __init__(self, inbound: InboundSync, *, min_interval: float = 1.0) -> None:
        self.inbound = inbound
        self.min_interval = min_interval
        self._pending: set[int] = set()
        self._marking: set[int] = set()  # due flag being written by a request thread
        self._stale: dict[str, Channel] = {}
        self._stale_seen: set[str] = set()
        self._cond = threading.Condition()
        self._running = False
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.notified = 0
        self.coalesced = 0

    # -- called by the webhook ---------------------------------------------------------------

    def notify(self, doctor_id: int) -> bool:
        """A change for ``doctor_id``; True when it started new work, False when coalesced.

        The doctor's due flag is written to the database once per worker round: while the
        doctor is pending here (or another request thread is writing its flag), further
        notifications only count as ``coalesced``.
        """
        doctor_id = int(doctor_id)
        with self._cond:
            self.notified += 1
            if doctor_id in self._pending or doctor_id in self._marking:
                self.coalesced += 1
                return False
            self._marking.add(doctor_id)
        try:
            self.inbound.mark_due(doctor_id)  # survives this process; any scheduler picks it up
        finally:
            with self._cond:
                self._marking.discard(doctor_id)
        with self._cond:
            self._pending.add(doctor_id)
            self._cond.notify_all()
        return True

    def stop_stale_channel(self, channel: Channel) -> None:
        """A channel we stopped still notifies: stop it at Google (once per process)."""
        with self._cond:
            if channel.channel_id in self._stale_seen:
                return
            self._stale_seen.add(channel.channel_id)
            self._stale[channel.channel_id] = channel
            self._cond.notify_all()

    # -- the work ----------------------------------------------------------------------------

    def run_pending(self) -> InboundResult:
        """One round in the calling thread: stale channels stopped, pending doctors synced."""
        with self._cond:
            doctors = sorted(self._pending)
            self._pending.clear()
            stale = list(self._stale.values())
            self._stale.clear()
            self._running = True
        try:
            for channel in stale:
                self.inbound.channels.stop_stale(channel)
            result = self.inbound.run_due(doctors) if doctors else InboundResult()
            if result.busy:
                # Another process holds a doctor: its due flag stays, retry next round.
                with self._cond:
                    self._pending.update(d for d in doctors if d in self.inbound.due_doctors())
            return result
        finally:
            with self._cond:
                self._running = False
                self.rounds += 1
                self._cond.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is pending or running (True), or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and not self._stale and not self._running, timeout)

    def start(self) -> InboundWorker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="kcsc-inbound", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._closing.is_set():
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending or self._stale)
                                    or self._closing.is_set())
            if self._closing.is_set():
                return
            try:
                self.run_pending()
            except Exception:  # keep the worker alive; the due flags remain for the poll
                log.exception("inbound worker round failed")
            # Coalescing window: notifications arriving now wait for one more round.
            self._closing.wait(self.min_interval)


# --------------------------------------------------------------------------------------------
# Scheduler wiring
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A periodic job for ``sidecar.scheduler`` (its ``JobSpec`` fields)."""

    name: str
    func: Any
    seconds: float
    jitter: float = 0.0


def scheduler_jobs(runtime: Any, calendar_for: Any = None) -> list[Job]:
    """The inbound jobs: due doctors every ``sync.poll_seconds``; the polling fallback a few
    times per ``sync.inbound_poll_seconds``; channel upkeep well inside the renewal margin.
    Also registers ``runtime.stop_channels`` (channels stopped on disconnect)."""
    from sidecar.sync import channels as channel_module

    manager = channel_module.install(runtime, calendar_for)
    inbound = InboundSync(runtime, calendar_for, channels=manager)
    sync = runtime.settings.sync
    due_every = float(sync.poll_seconds)
    poll_every = max(1.0, float(sync.inbound_poll_seconds) / 4)
    channel_every = max(60.0, min(3600.0, float(sync.channel_renew_margin_seconds) / 4))
    return [
        Job("inbound_due", inbound.run_due, due_every, jitter=min(0.5, due_every / 10)),
        Job("inbound_poll", inbound.run_once, poll_every, jitter=poll_every / 10),
        Job("channels", manager.run_once, channel_every, jitter=min(60.0, channel_every / 10)),
    ]
