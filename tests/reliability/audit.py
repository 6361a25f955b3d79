"""The end-of-scenario audit: Google (the emulator's dump) against KiviCare (the mapping table).

For each qualifying appointment: exactly one live event of ours with a Meet link, exactly one
mapping row, and the row names that event. Nothing for non-qualifying appointments. No live event
of ours (``kcsc`` id prefix or ``extendedProperties.private.kcsc_appointment_id``) that no mapping
row references (an orphan). Successful ``events.insert`` calls per event id at most one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa


@dataclass
class Audit:
    qualifying: int
    live_events: int
    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    double_inserts: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self.duplicates + self.lost + self.orphans + self.unexpected + self.double_inserts

    def summary(self) -> str:
        return (f"qualifying={self.qualifying} live_events={self.live_events} "
                f"duplicates={len(self.duplicates) + len(self.double_inserts)} "
                f"lost={len(self.lost)} orphans={len(self.orphans)} "
                f"unexpected={len(self.unexpected)}")


def _appointment_of(event: dict[str, Any]) -> int | None:
    raw = ((event.get("extendedProperties") or {}).get("private") or {}).get(
        "kcsc_appointment_id")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def ours(event: dict[str, Any]) -> bool:
    return str(event.get("id", "")).startswith("kcsc") or _appointment_of(event) is not None


def audit(google: Any, engine: sa.Engine, mappings: sa.Table, qualifying: Iterable[int],
          not_qualifying: Iterable[int] = ()) -> Audit:
    want = set(qualifying)
    unwanted = set(not_qualifying)
    live: dict[str, dict[str, Any]] = {}
    by_appt: dict[int, list[str]] = defaultdict(list)
    for cal in google.dump()["calendars"]:
        for event in cal["events"]:
            if not ours(event) or event.get("status") == "cancelled":
                continue
            live[event["id"]] = event
            appt = _appointment_of(event)
            if appt is not None:
                by_appt[appt].append(event["id"])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(mappings.c.appointment_id, mappings.c.event_id,
                                      mappings.c.url)).all()
    rows_by_appt: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for appt_id, event_id, url in rows:
        rows_by_appt[int(appt_id)].append((str(event_id), str(url or "")))

    result = Audit(qualifying=len(want), live_events=len(live))
    for appt in sorted(want):
        events, maps = by_appt.get(appt, []), rows_by_appt.get(appt, [])
        if len(events) > 1 or len(maps) > 1:
            result.duplicates.append(f"appointment {appt}: events {events}, rows {maps}")
        elif not events or not maps:
            result.lost.append(f"appointment {appt}: events {events}, rows {maps}")
        elif maps[0][0] != events[0] or not maps[0][1].startswith("https://meet.google.com/"):
            result.lost.append(f"appointment {appt}: row {maps[0]} does not name {events[0]}")
        elif live[events[0]].get("hangoutLink") != maps[0][1]:
            result.lost.append(f"appointment {appt}: link differs from the event's")
    for appt in sorted(unwanted):
        if by_appt.get(appt) or rows_by_appt.get(appt):
            result.unexpected.append(f"appointment {appt} should have nothing: "
                                     f"{by_appt.get(appt)} {rows_by_appt.get(appt)}")
    referenced = {event_id for maps in rows_by_appt.values() for event_id, _ in maps}
    result.orphans = [f"event {eid} (appointment {_appointment_of(e)})"
                      for eid, e in live.items() if eid not in referenced]
    inserts = Counter(str((e.get("body") or {}).get("id"))
                      for e in google.requests("calendar.events.insert")
                      if e.get("status") == 200)
    result.double_inserts = [f"event {eid} inserted {n} times" for eid, n in inserts.items()
                             if n > 1]
    return result
