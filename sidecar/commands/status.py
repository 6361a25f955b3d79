"""``kc-sidecar status [--json]``: every doctor's connection and sync state at a glance.

One row per KiviCare doctor (and any user the sidecar still tracks items for): connection,
Google e-mail, pending and failed items, push channel expiry, last sync and last error. The
figures come from the sidecar's own tables and the add-on's user meta, read-only; the same
names and statuses as the admin page (``sidecar.web.connect_flow.doctor_rows``).
``--json`` prints ``{"generated_at", "items": {state: n}, "doctors": [...]}``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from sidecar.config import Settings

EXIT_OK = 0
#: items that still need work; ``waiting_reconnect`` is shown apart
PENDING_STATES = ("pending", "creating", "awaiting_conference", "deleting")


@dataclass
class DoctorStatus:
    doctor_id: int
    name: str
    connection: str
    google_email: str | None
    synced: int
    pending: int
    failed: int
    waiting_reconnect: int
    channel_expires_at: str | None
    last_sync_at: str | None
    last_error: str | None


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def collect(runtime: Any) -> dict[str, Any]:
    """The status report as plain data (what ``--json`` prints)."""
    from sidecar import wp_auth
    from sidecar.web.connect_flow import doctor_rows

    t = runtime.state.tables.items
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    last_item_sync: dict[int, datetime] = {}
    item_errors: dict[int, str] = {}
    with runtime.engine.connect() as conn:
        ids = set(wp_auth.all_doctor_ids(conn, runtime.schema))
        for doctor_id, state, n, latest in conn.execute(
                sa.select(t.c.doctor_id, t.c.state, sa.func.count(), sa.func.max(t.c.updated_at))
                .group_by(t.c.doctor_id, t.c.state)):
            counts[int(doctor_id)][state] = int(n)
            if state == "synced" and latest is not None:
                last_item_sync[int(doctor_id)] = latest.replace(tzinfo=UTC) \
                    if latest.tzinfo is None else latest
        for doctor_id, error in conn.execute(
                sa.select(t.c.doctor_id, t.c.last_error)
                .where(t.c.state == "failed", t.c.last_error.is_not(None))
                .order_by(t.c.updated_at)):
            item_errors[int(doctor_id)] = str(error)  # the newest wins
        doctors = {d.doctor_id: d for d in runtime.state.list_doctors(conn=conn)}
        channels = runtime.state.active_channels(conn=conn)
        totals = runtime.state.count_by_state(conn=conn)
    ids |= set(counts) | set(doctors)
    expiry: dict[int, datetime] = {}
    for channel in channels:
        if channel.expiration is not None:
            known = expiry.get(channel.doctor_id)
            expiry[channel.doctor_id] = channel.expiration if known is None else max(
                known, channel.expiration)
    out = []
    for row in doctor_rows(runtime, sorted(ids)):
        c = counts.get(row.doctor_id, {})
        info = doctors.get(row.doctor_id)
        syncs = [v for v in (info.last_sync_at if info else None,
                             last_item_sync.get(row.doctor_id)) if v is not None]
        out.append(DoctorStatus(
            doctor_id=row.doctor_id, name=row.name, connection=row.status,
            google_email=row.google_email, synced=c.get("synced", 0),
            pending=sum(c.get(s, 0) for s in PENDING_STATES), failed=c.get("failed", 0),
            waiting_reconnect=c.get("waiting_reconnect", 0),
            channel_expires_at=_iso(expiry.get(row.doctor_id)),
            last_sync_at=_iso(max(syncs)) if syncs else None,
            last_error=item_errors.get(row.doctor_id) or row.last_error,
        ))
    return {"generated_at": _iso(runtime.clock.now()), "items": dict(sorted(totals.items())),
            "doctors": [asdict(d) for d in out]}


def render_table(report: dict[str, Any]) -> str:
    headers = ("ID", "DOCTOR", "CONNECTION", "GOOGLE", "SYNCED", "PENDING", "FAILED", "WAITING",
               "CHANNEL EXPIRES", "LAST SYNC", "LAST ERROR")
    rows = [(str(d["doctor_id"]), d["name"], d["connection"], d["google_email"] or "-",
             str(d["synced"]), str(d["pending"]), str(d["failed"]),
             str(d["waiting_reconnect"]), d["channel_expires_at"] or "-",
             d["last_sync_at"] or "-", _short(d["last_error"]))
            for d in report["doctors"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in (headers, *rows)]
    items = ", ".join(f"{state} {n}" for state, n in report["items"].items()) or "none"
    if not rows:
        lines.append("(no KiviCare doctors on this site)")
    lines.append(f"items: {items}")
    return "\n".join(lines)


def _short(text: str | None, limit: int = 60) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.runtime import build_runtime

    runtime = build_runtime(settings)
    try:
        report = collect(runtime)
    finally:
        runtime.engine.dispose()
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report))
    return EXIT_OK
