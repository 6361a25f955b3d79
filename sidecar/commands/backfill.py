"""``kc-sidecar backfill [--from DATE]``: create missing meetings for upcoming appointments.

Every telemedicine appointment starting from ``DATE`` (default: today in the site's time zone)
up to ``sync.upcoming_days`` ahead of today is tracked; items that are new, failed, waiting for a
doctor who has since reconnected, or synced without a valid mapping row are made due; then due
items are processed until the set is settled, with a plain-text progress bar on stderr. Items
whose next attempt is more than a minute away (Google asked us to back off) are left to the
running service and reported. Exit 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO

from sidecar.config import Settings

EXIT_OK, EXIT_FAILED = 0, 1
SETTLED = ("synced", "done", "failed", "waiting_reconnect")
#: stop waiting for items whose next attempt is further away than this
MAX_WAIT = timedelta(seconds=60)
CHUNK = 1000


class ProgressBar:
    """``[#####.....] 12/40 meetings`` redrawn in place on a terminal; on a pipe, one line per
    tenth of the way (and the last), so logs stay readable."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_step = -1

    def update(self, done: int, note: str = "") -> None:
        filled = self.width if self.total == 0 else self.width * done // self.total
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} meetings"
        if note:
            line += f"  {note}"
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            step = 10 if self.total == 0 else 10 * done // self.total
            if step == self._last_step:
                return
            self._last_step = step
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def queue_backfill(runtime: Any, outbound: Any, first: date | None) -> list[int]:
    """Track and make due what the backfill covers; returns the appointment ids covered."""
    from sidecar.meetings import is_valid_mapping_row

    reader, state = outbound.reader, runtime.state
    now = runtime.clock.now()
    with runtime.engine.connect() as conn:
        site_zone = reader.site_zone(conn)
        today = now.astimezone(site_zone.tzinfo).date()
        start = first or today
        ids = reader.ids_starting_between(conn, start, max(start, today) + timedelta(
            days=runtime.settings.sync.upcoming_days))
        targets: list[int] = []
        for offset in range(0, len(ids), CHUNK):
            chunk = ids[offset: offset + CHUNK]
            facts = reader.load(conn, chunk)
            items = state.get_items(chunk, conn=conn)
            rows = reader.mapping_rows(conn, chunk)
            doctors = {f.appointment.doctor_id for f in facts.values()}
            statuses = runtime.accounts.connection_statuses(conn, doctors)
            for appt_id, f in facts.items():
                item = items.get(appt_id)
                if item is None:
                    if not f.telemed:
                        continue
                    state.ensure_item(appt_id, f.appointment.doctor_id, now=now, conn=conn)
                elif item.state == "done":
                    if not f.telemed:
                        continue
                elif item.state == "failed" or (
                        item.state == "waiting_reconnect"
                        and statuses.get(f.appointment.doctor_id) == "connected") or (
                        item.state == "synced" and not any(
                            is_valid_mapping_row(r.event_id, r.url)
                            for r in rows.get(appt_id, []))):
                    state.requeue(appt_id, now=now, conn=conn)
                targets.append(appt_id)
            conn.commit()
    return targets


def settle(runtime: Any, outbound: Any, targets: list[int], bar: ProgressBar) -> dict[str, int]:
    """Process due items until every target is settled or only far-off retries remain."""
    from sidecar.scheduler import SyncScheduler

    drainer = SyncScheduler(runtime, outbound=outbound, with_inbound=False)
    while True:
        drainer.drain()
        states: dict[str, int] = {}
        next_due: datetime | None = None
        for offset in range(0, len(targets), CHUNK):
            for item in runtime.state.get_items(targets[offset: offset + CHUNK]).values():
                states[item.state] = states.get(item.state, 0) + 1
                if item.state not in SETTLED and item.next_attempt_at is not None:
                    due = item.next_attempt_at
                    due = due.replace(tzinfo=UTC) if due.tzinfo is None else due
                    next_due = due if next_due is None else min(next_due, due)
        settled = sum(states.get(s, 0) for s in SETTLED)
        failed = states.get("failed", 0)
        bar.update(settled, f"{failed} failed" if failed else "")
        if settled >= len(targets):
            return states
        now = runtime.clock.now()
        if next_due is None or next_due - now > MAX_WAIT:
            return states
        time.sleep(min(0.25, max(0.02, (next_due - now).total_seconds())))


def run(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.runtime import build_runtime
    from sidecar.sync.outbound import OutboundSync

    runtime = build_runtime(settings)
    try:
        outbound = OutboundSync(runtime, runtime.google_factory,  # type: ignore[arg-type]
                                max_workers=settings.sync.workers,
                                per_doctor=settings.sync.per_doctor)
        targets = queue_backfill(runtime, outbound, getattr(args, "from_date", None))
        bar = ProgressBar(len(targets))
        states = settle(runtime, outbound, targets, bar) if targets else {}
        bar.finish()
    finally:
        runtime.engine.dispose()
    left = len(targets) - sum(states.get(s, 0) for s in SETTLED)
    print(f"backfill: {len(targets)} telemedicine appointments; "
          f"with meeting {states.get('synced', 0)}, no meeting needed {states.get('done', 0)}, "
          f"waiting for the doctor to connect {states.get('waiting_reconnect', 0)}, "
          f"failed {states.get('failed', 0)}, still queued {left}")
    return EXIT_FAILED if states.get("failed", 0) else EXIT_OK
