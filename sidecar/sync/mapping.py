"""Writes to the PHP add-on's ``kc_appointment_google_meet_mappings`` table, in its reader's shape.

One row per appointment: our row is updated in place, error sentinels and rows of events we no
longer own are removed in the same transaction, so PHP (which reads the first row it finds)
always sees the live Meet link.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sidecar.meetings import mapping_row_values, only_columns
from sidecar.timezones import ResolvedZone
from wp_schema.reflect import SiteSchema


class MappingWriter:
    def __init__(self, schema: SiteSchema) -> None:
        table = schema.meet_mappings
        assert table is not None, "schema.require() must pass before writing mappings"
        self.table = table

    def write(
        self,
        conn: sa.Connection,
        appointment_id: int,
        event: Mapping[str, Any],
        *,
        now: datetime,
        site_zone: ResolvedZone,
    ) -> dict[str, Any]:
        """Make the appointment's single mapping row describe ``event``; returns the values.

        Raises ``ValueError`` when the event has no Meet link yet (nothing is written).
        """
        values = only_columns(
            mapping_row_values(appointment_id, event, now=now, site_zone=site_zone),
            self.table.c.keys(),
        )
        if isinstance(values.get("created_at"), str):
            # PHP's current_time('mysql') text; a datetime binds the same on MariaDB and also
            # on SQLite, whose DATETIME type refuses strings.
            values["created_at"] = datetime.strptime(values["created_at"], "%Y-%m-%d %H:%M:%S")
        t = self.table
        rows = conn.execute(
            sa.select(t.c.id, t.c.event_id).where(t.c.appointment_id == appointment_id)
            .order_by(t.c.id)
        ).all()
        keep = next((r.id for r in rows if str(r.event_id) == values["event_id"]), None)
        stale = [r.id for r in rows if r.id != keep]
        if stale:
            conn.execute(sa.delete(t).where(t.c.id.in_(stale)))
        if keep is None:
            conn.execute(sa.insert(t).values(**values))
        else:
            update = {k: v for k, v in values.items() if k in ("url", "event_url", "password")}
            conn.execute(sa.update(t).where(t.c.id == keep).values(**update))
        return values

    def delete_for(self, conn: sa.Connection, appointment_id: int) -> int:
        """Remove every mapping row of an appointment (its event is gone)."""
        t = self.table
        return conn.execute(sa.delete(t).where(t.c.appointment_id == appointment_id)).rowcount
