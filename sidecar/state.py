"""The sidecar's own tables (``{blog_prefix}kcsc_*``) and the small typed store over them.

Owns everything the sidecar remembers that WordPress and KiviCare do not: one work item per
tracked appointment (event id, fingerprint, lifecycle state, attempts, last error, next attempt,
lease), key/value cursors, per-doctor Google state (sync token, refresh lock), push channels and
an optional audit log.

Schema changes are versioned: ``kcsc_schema_version`` lists applied migrations; ``MIGRATIONS``
are run in order under a cross-process lock (``GET_LOCK`` on MariaDB, a file lock on SQLite, see
``sidecar.db.named_lock``). MariaDB commits DDL implicitly, so every migration must be
idempotent (check before create/alter) — a crash halfway is repaired by running it again.

Times are stored as naive UTC ``DATETIME`` (microseconds on MariaDB) and returned as aware UTC.

Work is claimed with a lease: a conditional ``UPDATE ... WHERE claim is free`` stamps a random
``claim_token``; only rows carrying the caller's token are returned, and finishing an item
(``release`` and the ``mark_*`` helpers) again requires that token, so a worker whose lease ran
out cannot overwrite the outcome of the worker that took the item over.

Channel tokens are stored as SHA-256 digests: Google echoes the token in every notification and
we only ever need to *compare* it (``channels.stop`` needs id and resource id, not the token),
so a database read does not let anyone forge notifications. Tokens are random (≥128 bits), so an
unsalted digest is enough; comparison is constant-time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sidecar.clock import Clock, SystemClock
from sidecar.db import LockTimeout, named_lock
from wp_schema.names import TableNames

log = logging.getLogger(__name__)

ItemState = Literal[
    "pending", "creating", "awaiting_conference", "synced", "deleting", "done", "failed",
    "waiting_reconnect",
]
ITEM_STATES: tuple[str, ...] = (
    "pending", "creating", "awaiting_conference", "synced", "deleting", "done", "failed",
    "waiting_reconnect",
)
# States a worker picks up once next_attempt_at is due. ``synced`` is included so a scheduled
# re-check (e.g. an event whose Meet link should be re-read) is possible; ``done``,
# ``waiting_reconnect`` and ``failed`` wait for an explicit requeue (reconnect, ``retry``).
DUE_STATES: tuple[str, ...] = ("pending", "creating", "awaiting_conference", "synced", "deleting")

LAST_ERROR_MAX = 2000
MIGRATION_LOCK = "kcsc_migrate"
MIGRATION_LOCK_TIMEOUT = 30.0
_DEADLOCK_CODES = frozenset({1205, 1213})  # lock wait timeout, deadlock (MariaDB/MySQL)


class StateError(Exception):
    """The sidecar's own tables cannot be used as asked."""


class MigrationError(StateError):
    pass


# --- table definitions -----------------------------------------------------------------------

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrement needs INTEGER
_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_MYSQL_OPTS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


class StateTables:
    """``sqlalchemy.Table`` objects for one site's ``kcsc_*`` tables."""

    def __init__(self, names: TableNames) -> None:
        self.names = names
        md = self.metadata = sa.MetaData()
        name = names.sidecar
        self.schema_version = sa.Table(
            name("schema_version"), md,
            sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.String(191), nullable=False),
            sa.Column("applied_at", _TS, nullable=False),
            **_MYSQL_OPTS,
        )
        self.items = sa.Table(
            name("items"), md,
            sa.Column("appointment_id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("doctor_id", sa.BigInteger, nullable=False),
            sa.Column("calendar_doctor_id", sa.BigInteger, nullable=True),
            sa.Column("event_id", sa.String(255), nullable=True),
            sa.Column("event_version", sa.Integer, nullable=False, server_default="0"),
            sa.Column("conference_attempt", sa.Integer, nullable=False, server_default="0"),
            sa.Column("fingerprint", sa.String(64), nullable=True),
            sa.Column("state", sa.String(32), nullable=False, server_default="pending"),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
            sa.Column("last_error", sa.Text, nullable=True),
            sa.Column("next_attempt_at", _TS, nullable=True),
            sa.Column("claimed_by", sa.String(191), nullable=True),
            sa.Column("claim_token", sa.String(64), nullable=True),
            sa.Column("claimed_until", _TS, nullable=True),
            sa.Column("requeued", sa.Integer, nullable=False, server_default="0"),
            sa.Column("created_at", _TS, nullable=True),
            sa.Column("updated_at", _TS, nullable=True),
            # Digest of the appointment's own rows, computed by the database, as last seen by a
            # reconcile that found the fingerprint unchanged (see AppointmentReader.source_hash):
            # lets a reconcile skip unchanged appointments without loading them.
            sa.Column("source_hash", sa.String(32), nullable=True),
            sa.Index(f"ix_{name('items')}_due", "state", "next_attempt_at"),
            sa.Index(f"ix_{name('items')}_doctor", "doctor_id"),
            sa.Index(f"ix_{name('items')}_event", "event_id"),
            sa.Index(f"ix_{name('items')}_claim", "claim_token"),
            sa.Index(f"ix_{name('items')}_lease", "claimed_until"),
            **_MYSQL_OPTS,
        )
        self.cursor = sa.Table(
            name("cursor"), md,
            sa.Column("name", sa.String(191), primary_key=True),
            sa.Column("value", sa.Text, nullable=True),
            sa.Column("updated_at", _TS, nullable=True),
            **_MYSQL_OPTS,
        )
        self.doctors = sa.Table(
            name("doctors"), md,
            sa.Column("doctor_id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("google_email", sa.String(255), nullable=True),
            sa.Column("status", sa.String(32), nullable=False, server_default="unknown"),
            sa.Column("status_reason", sa.String(255), nullable=True),
            sa.Column("last_error", sa.Text, nullable=True),
            sa.Column("sync_token", sa.Text, nullable=True),
            sa.Column("last_sync_at", _TS, nullable=True),
            sa.Column("last_refresh_at", _TS, nullable=True),
            sa.Column("refresh_lock_until", _TS, nullable=True),
            sa.Column("updated_at", _TS, nullable=True),
            **_MYSQL_OPTS,
        )
        self.channels = sa.Table(
            name("channels"), md,
            sa.Column("channel_id", sa.String(64), primary_key=True),
            sa.Column("doctor_id", sa.BigInteger, nullable=False),
            sa.Column("resource_id", sa.String(255), nullable=True),
            sa.Column("token_hash", sa.String(64), nullable=False),
            sa.Column("expiration", _TS, nullable=True),
            sa.Column("created_at", _TS, nullable=False),
            sa.Column("stopped_at", _TS, nullable=True),
            sa.Index(f"ix_{name('channels')}_doctor", "doctor_id"),
            sa.Index(f"ix_{name('channels')}_expiration", "expiration"),
            **_MYSQL_OPTS,
        )
        self.events_log = sa.Table(
            name("events_log"), md,
            sa.Column("id", _ID, primary_key=True, autoincrement=True),
            sa.Column("at", _TS, nullable=False),
            sa.Column("action", sa.String(64), nullable=False),
            sa.Column("appointment_id", sa.BigInteger, nullable=True),
            sa.Column("doctor_id", sa.BigInteger, nullable=True),
            sa.Column("event_id", sa.String(255), nullable=True),
            sa.Column("detail", sa.Text, nullable=True),
            sa.Index(f"ix_{name('events_log')}_appointment", "appointment_id"),
            **_MYSQL_OPTS,
        )


# --- migrations ------------------------------------------------------------------------------

Migration = Callable[[sa.Connection, StateTables], None]


def _m1_initial(conn: sa.Connection, tables: StateTables) -> None:
    for table in (tables.items, tables.cursor, tables.doctors, tables.channels,
                  tables.events_log):
        table.create(conn, checkfirst=True)


def _m2_source_hash(conn: sa.Connection, tables: StateTables) -> None:
    """``items.source_hash`` (tables made by migration 1 before the column existed)."""
    name = tables.items.name
    if "source_hash" in {c["name"] for c in sa.inspect(conn).get_columns(name)}:
        return
    quoted = conn.dialect.identifier_preparer.quote(name)
    conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD COLUMN source_hash VARCHAR(32) NULL")


def _m3_oauth_states(conn: sa.Connection, tables: StateTables) -> None:
    """``kcsc_oauth_states`` (single-use OAuth states and invites, see ``sidecar.signing``)."""
    from sidecar.signing import oauth_states_table

    oauth_states_table(sa.MetaData(), tables.names).create(conn, checkfirst=True)


def _m4_lease_index(conn: sa.Connection, tables: StateTables) -> None:
    """Index on ``items.claimed_until``: claims look up doctors busy in other replicas."""
    index = next(i for i in tables.items.indexes if i.name and i.name.endswith("_lease"))
    if index.name in {i["name"] for i in sa.inspect(conn).get_indexes(tables.items.name)}:
        return
    index.create(conn)


# Append only; never edit an applied migration. Each must be idempotent (see module docstring).
MIGRATIONS: tuple[tuple[int, str, Migration], ...] = (
    (1, "initial tables", _m1_initial),
    (2, "items.source_hash", _m2_source_hash),
    (3, "oauth_states", _m3_oauth_states),
    (4, "items lease index", _m4_lease_index),
)
LATEST_VERSION = MIGRATIONS[-1][0]


# --- records ---------------------------------------------------------------------------------


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


R = TypeVar("R")


def _record(cls: type[R], row: sa.Row[Any] | None) -> R | None:
    if row is None:
        return None
    wanted = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _aware(v) for k, v in row._mapping.items() if k in wanted})


@dataclass(frozen=True)
class Item:
    """One tracked appointment. ``claim_token`` is set on items returned by a claim."""

    appointment_id: int
    doctor_id: int
    calendar_doctor_id: int | None = None
    event_id: str | None = None
    event_version: int = 0
    conference_attempt: int = 0
    fingerprint: str | None = None
    state: str = "pending"
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    claimed_by: str | None = None
    claim_token: str | None = None
    claimed_until: datetime | None = None
    requeued: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class DoctorState:
    doctor_id: int
    google_email: str | None = None
    status: str = "unknown"
    status_reason: str | None = None
    last_error: str | None = None
    sync_token: str | None = None
    last_sync_at: datetime | None = None
    last_refresh_at: datetime | None = None
    refresh_lock_until: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Channel:
    channel_id: str
    doctor_id: int
    token_hash: str
    created_at: datetime
    resource_id: str | None = None
    expiration: datetime | None = None
    stopped_at: datetime | None = None


@dataclass(frozen=True)
class LogEntry:
    id: int
    at: datetime
    action: str
    appointment_id: int | None = None
    doctor_id: int | None = None
    event_id: str | None = None
    detail: str | None = None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _clip_error(error: object) -> str:
    text = str(error)
    return text if len(text) <= LAST_ERROR_MAX else text[: LAST_ERROR_MAX - 1] + "…"


_ITEM_FIELDS = frozenset(
    {"doctor_id", "calendar_doctor_id", "event_id", "event_version", "conference_attempt",
     "fingerprint", "state", "attempts", "last_error", "next_attempt_at"}
)
_DOCTOR_FIELDS = frozenset(
    {"google_email", "status", "status_reason", "last_error", "sync_token", "last_sync_at",
     "last_refresh_at", "refresh_lock_until"}
)


def _checked_fields(fields: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    unknown = set(fields) - allowed
    if unknown:
        raise TypeError(f"unknown fields: {', '.join(sorted(unknown))}")
    if "state" in fields and fields["state"] not in ITEM_STATES:
        raise ValueError(f"unknown item state {fields['state']!r}")
    if "last_error" in fields and fields["last_error"] is not None:
        fields = {**fields, "last_error": _clip_error(fields["last_error"])}
    return {k: _naive_utc(v) if isinstance(v, datetime) else v for k, v in fields.items()}


# --- the store -------------------------------------------------------------------------------


class StateStore:
    """Typed access to the ``kcsc_*`` tables.

    Every method takes an optional ``conn``: pass the caller's connection to write in the same
    transaction as, say, the KiviCare mapping row; without it the method runs its own short
    transaction.
    """

    def __init__(self, engine: sa.Engine, names: TableNames, clock: Clock | None = None) -> None:
        self.engine = engine
        self.names = names
        self.tables = StateTables(names)
        self.clock: Clock = clock or SystemClock()

    # -- plumbing --

    @contextlib.contextmanager
    def _tx(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as own:
            yield own

    def _now(self, now: datetime | None) -> datetime:
        return _naive_utc(now or self.clock.now())  # type: ignore[return-value]

    @property
    def _is_mysql(self) -> bool:
        return self.engine.dialect.name in ("mysql", "mariadb")

    def _insert_ignore(self, table: sa.Table) -> sa.Insert:
        if self._is_mysql:
            return sa.insert(table).prefix_with("IGNORE")
        return sa.insert(table).prefix_with("OR IGNORE")

    # -- migrations --

    def schema_version(self, *, conn: sa.Connection | None = None) -> int:
        """Highest applied migration, 0 when the sidecar's tables do not exist yet."""
        with self._tx(conn) as c:
            if not sa.inspect(c).has_table(self.tables.schema_version.name):
                return 0
            value = c.execute(sa.select(sa.func.max(self.tables.schema_version.c.version)))
            return int(value.scalar() or 0)

    def migrate(self) -> int:
        """Create or upgrade the tables; safe to run from several processes at once."""
        try:
            with named_lock(self.engine, MIGRATION_LOCK, MIGRATION_LOCK_TIMEOUT):
                return self._migrate_locked()
        except LockTimeout as err:
            raise MigrationError(
                "another process has held the sidecar migration lock for "
                f"{MIGRATION_LOCK_TIMEOUT:.0f}s; retry when it has finished"
            ) from err

    def _migrate_locked(self) -> int:
        with self.engine.begin() as conn:
            self.tables.schema_version.create(conn, checkfirst=True)
        current = self.schema_version()
        if current > LATEST_VERSION:
            raise MigrationError(
                f"the database has sidecar schema version {current}, newer than this sidecar "
                f"knows ({LATEST_VERSION}); upgrade the sidecar"
            )
        for version, name, migration in MIGRATIONS:
            if version <= current:
                continue
            log.info("applying sidecar migration %s (%s)", version, name)
            with self.engine.begin() as conn:
                migration(conn, self.tables)
                conn.execute(
                    self._insert_ignore(self.tables.schema_version).values(
                        version=version, name=name, applied_at=self._now(None)
                    )
                )
            current = version
        return current

    # -- items --

    def get_item(self, appointment_id: int, *, conn: sa.Connection | None = None) -> Item | None:
        t = self.tables.items
        with self._tx(conn) as c:
            row = c.execute(sa.select(t).where(t.c.appointment_id == appointment_id)).first()
        return _record(Item, row)

    def get_items(
        self, appointment_ids: Iterable[int], *, conn: sa.Connection | None = None
    ) -> dict[int, Item]:
        ids = list(appointment_ids)
        if not ids:
            return {}
        t = self.tables.items
        with self._tx(conn) as c:
            rows = c.execute(sa.select(t).where(t.c.appointment_id.in_(ids))).all()
        return {row.appointment_id: _record(Item, row) for row in rows}  # type: ignore[misc]

    def ensure_item(
        self,
        appointment_id: int,
        doctor_id: int,
        *,
        now: datetime | None = None,
        conn: sa.Connection | None = None,
    ) -> bool:
        """Start tracking an appointment (state ``pending``, due now); True if it was new."""
        stamp = self._now(now)
        with self._tx(conn) as c:
            result = c.execute(
                self._insert_ignore(self.tables.items).values(
                    appointment_id=appointment_id, doctor_id=doctor_id, state="pending",
                    next_attempt_at=stamp, created_at=stamp, updated_at=stamp,
                )
            )
            return result.rowcount == 1

    def ensure_items(
        self,
        pairs: Iterable[tuple[int, int]],
        *,
        now: datetime | None = None,
        conn: sa.Connection | None = None,
    ) -> int:
        """:meth:`ensure_item` for many ``(appointment_id, doctor_id)`` pairs in one statement
        per 500; returns how many were new."""
        rows = list(pairs)
        if not rows:
            return 0
        stamp = self._now(now)
        created = 0
        with self._tx(conn) as c:
            for start in range(0, len(rows), 500):
                created += c.execute(self._insert_ignore(self.tables.items), [
                    {"appointment_id": a, "doctor_id": d, "state": "pending",
                     "next_attempt_at": stamp, "created_at": stamp, "updated_at": stamp}
                    for a, d in rows[start : start + 500]]).rowcount
        return created

    def set_source_hashes(
        self, hashes: dict[int, str], *, conn: sa.Connection | None = None
    ) -> None:
        """Remember the source digest a reconcile verified for each appointment."""
        if not hashes:
            return
        t = self.tables.items
        with self._tx(conn) as c:
            c.execute(
                sa.update(t).where(t.c.appointment_id == sa.bindparam("_id"))
                .values(source_hash=sa.bindparam("_hash")),
                [{"_id": a, "_hash": h} for a, h in hashes.items()],
            )

    def upsert_item(
        self,
        appointment_id: int,
        *,
        now: datetime | None = None,
        conn: sa.Connection | None = None,
        **fields: Any,
    ) -> None:
        """Set fields of an item, creating it (``doctor_id`` required then). Ignores leases:
        use it for bookkeeping outside the worker loop (scans, adoption, admin actions)."""
        values = _checked_fields(fields, _ITEM_FIELDS)
        stamp = self._now(now)
        t = self.tables.items
        with self._tx(conn) as c:
            if values:
                updated = c.execute(
                    sa.update(t).where(t.c.appointment_id == appointment_id)
                    .values(**values, updated_at=stamp)
                ).rowcount
            else:
                updated = c.execute(
                    sa.select(sa.func.count()).select_from(t)
                    .where(t.c.appointment_id == appointment_id)
                ).scalar()
            if updated:
                return
            if "doctor_id" not in values:
                raise StateError(f"item {appointment_id} does not exist; doctor_id is required")
            inserted = c.execute(
                self._insert_ignore(t).values(
                    appointment_id=appointment_id, created_at=stamp, updated_at=stamp, **values
                )
            ).rowcount
            if not inserted:  # created concurrently: apply our values on top
                c.execute(
                    sa.update(t).where(t.c.appointment_id == appointment_id)
                    .values(**values, updated_at=stamp)
                )

    def _due(self, now: datetime) -> sa.ColumnElement[bool]:
        t = self.tables.items
        return sa.and_(
            t.c.state.in_(DUE_STATES),
            t.c.next_attempt_at.is_not(None),
            t.c.next_attempt_at <= now,
            sa.or_(t.c.claimed_until.is_(None), t.c.claimed_until <= now),
        )

    def claim_due_items(
        self,
        now: datetime,
        limit: int,
        worker_id: str,
        lease_seconds: float,
        *,
        doctor_ids: Sequence[int] | None = None,
        per_doctor: int | None = None,
    ) -> list[Item]:
        """Atomically lease up to ``limit`` due items, oldest ``next_attempt_at`` first.

        Two workers never receive the same item while its lease runs. A lease that ran out
        makes the item claimable again (the worker probably crashed). With ``per_doctor``,
        doctors for whom *other* workers hold that many unexpired leases are skipped, so
        replicas share a doctor's concurrency instead of each using all of it. This costs one
        indexed lookup per claim, not a lock per item; two replicas claiming in the same
        instant may still both take one doctor's items (a soft bound: per-item leases are what
        keep the work exactly-once).
        """
        if limit <= 0:
            return []
        stamp = self._now(now)
        until = stamp + timedelta(seconds=lease_seconds)
        token = secrets.token_hex(16)
        t = self.tables.items
        due = self._due(stamp)
        if doctor_ids is not None:
            due = sa.and_(due, t.c.doctor_id.in_(list(doctor_ids)))
        pick = due
        if per_doctor is not None:
            busy = t.alias("busy")
            pick = sa.and_(due, t.c.doctor_id.not_in(
                sa.select(busy.c.doctor_id)
                .where(busy.c.claimed_until > stamp, busy.c.claimed_by != worker_id[:191])
                .group_by(busy.c.doctor_id)
                .having(sa.func.count() >= per_doctor)))
        rows: Sequence[sa.Row[Any]] = []
        for attempt in range(5):
            try:
                with self.engine.begin() as c:
                    candidates = c.execute(
                        sa.select(t.c.appointment_id).where(pick)
                        .order_by(t.c.next_attempt_at, t.c.appointment_id)
                        .limit(limit - len(rows))
                    ).scalars().all()
                    if not candidates:
                        break  # nothing (more) is due; ``rows`` holds what was claimed
                    c.execute(
                        sa.update(t)
                        .where(t.c.appointment_id.in_(sorted(candidates)), due)
                        .values(claimed_by=worker_id[:191], claim_token=token,
                                claimed_until=until, requeued=0)
                    )
                    before = len(rows)
                    rows = c.execute(
                        sa.select(t).where(t.c.claim_token == token)
                        .order_by(t.c.next_attempt_at, t.c.appointment_id)
                    ).all()
                # Items a concurrent claim took between our read and our update are missing:
                # look again for others (an empty answer must mean "nothing due", or the
                # caller would stop early), a few times at most.
                if len(rows) - before == len(candidates) or len(rows) >= limit:
                    break
            except sa.exc.OperationalError as err:
                code = err.orig.args[0] if err.orig is not None and err.orig.args else None
                if code not in _DEADLOCK_CODES or attempt == 4:
                    raise
                log.info("claim hit a lock conflict (%s); retrying", code)
        return [_record(Item, row) for row in rows]  # type: ignore[misc]

    def release(
        self,
        claim: Item,
        *,
        now: datetime | None = None,
        conn: sa.Connection | None = None,
        **fields: Any,
    ) -> bool:
        """Finish a claimed item: write ``fields`` and drop the lease. False when the lease was
        lost (another worker owns the item now) — then nothing is written.

        If :meth:`requeue` ran while the item was leased, the change it announced is newer than
        what the worker synced: a ``synced``/``done`` outcome becomes ``pending`` and a due
        state's next attempt becomes now, so the change is not lost. Parked outcomes
        (``failed``, ``waiting_reconnect``) stay parked.
        """
        if not claim.claim_token:
            raise StateError(f"item {claim.appointment_id} was not claimed")
        values: dict[str, Any] = _checked_fields(fields, _ITEM_FIELDS)
        t = self.tables.items
        stamp = self._now(now)
        requeued = t.c.requeued == 1
        final_state = values.get("state", claim.state)
        if final_state in ("synced", "done"):
            values["state"] = sa.case((requeued, "pending"), else_=final_state)
            final_state = "pending"
        if final_state in DUE_STATES and "next_attempt_at" in values:
            later = values["next_attempt_at"]
            values["next_attempt_at"] = sa.case(
                (requeued, sa.literal(stamp, _TS)),
                else_=sa.null() if later is None else sa.literal(later, _TS),
            )
        values["requeued"] = 0
        with self._tx(conn) as c:
            result = c.execute(
                sa.update(t)
                .where(t.c.appointment_id == claim.appointment_id,
                       t.c.claim_token == claim.claim_token)
                .values(**values, claimed_by=None, claim_token=None, claimed_until=None,
                        updated_at=stamp)
            )
            return result.rowcount == 1

    def extend_lease(self, claim: Item, *, now: datetime, lease_seconds: float) -> bool:
        t = self.tables.items
        with self.engine.begin() as c:
            result = c.execute(
                sa.update(t)
                .where(t.c.appointment_id == claim.appointment_id,
                       t.c.claim_token == claim.claim_token)
                .values(claimed_until=self._now(now) + timedelta(seconds=lease_seconds))
            )
            return result.rowcount == 1

    def mark_synced(
        self,
        claim: Item,
        *,
        now: datetime,
        event_id: str | None,
        fingerprint: str | None,
        recheck_at: datetime | None = None,
        conn: sa.Connection | None = None,
        **fields: Any,
    ) -> bool:
        """Google matches KiviCare; nothing due unless ``recheck_at`` is given."""
        return self.release(
            claim, now=now, conn=conn, state="synced", event_id=event_id,
            fingerprint=fingerprint, attempts=0, last_error=None, next_attempt_at=recheck_at,
            **fields,
        )

    def mark_retry(
        self,
        claim: Item,
        *,
        now: datetime,
        error: object,
        delay: timedelta,
        conn: sa.Connection | None = None,
        **fields: Any,
    ) -> bool:
        """A transient failure: keep the item queued with its error and next attempt time."""
        return self.release(
            claim, now=now, conn=conn, attempts=claim.attempts + 1, last_error=error,
            next_attempt_at=self._now(now) + delay, **fields,
        )

    def mark_failed(
        self, claim: Item, *, now: datetime, error: object, conn: sa.Connection | None = None
    ) -> bool:
        """A permanent failure: parked until an operator runs ``retry``."""
        return self.release(
            claim, now=now, conn=conn, state="failed", attempts=claim.attempts + 1,
            last_error=error, next_attempt_at=None,
        )

    def mark_waiting_reconnect(
        self, claim: Item, *, now: datetime, error: object, conn: sa.Connection | None = None
    ) -> bool:
        """The doctor's Google access is gone: park until the doctor reconnects."""
        return self.release(
            claim, now=now, conn=conn, state="waiting_reconnect", last_error=error,
            next_attempt_at=None,
        )

    def mark_done(
        self, claim: Item, *, now: datetime, conn: sa.Connection | None = None, **fields: Any
    ) -> bool:
        """Nothing more to do for this appointment (event deleted, or left alone)."""
        return self.release(
            claim, now=now, conn=conn, state="done", last_error=None, next_attempt_at=None,
            **fields,
        )

    def requeue(
        self,
        appointment_id: int,
        *,
        now: datetime,
        state: str = "pending",
        conn: sa.Connection | None = None,
    ) -> bool:
        """Make one item due now (e.g. the appointment changed). A worker holding the item
        keeps its lease; its outcome is then re-queued (see :meth:`release`)."""
        values = _checked_fields({"state": state, "next_attempt_at": now, "requeued": 1},
                                 _ITEM_FIELDS | {"requeued"})
        t = self.tables.items
        with self._tx(conn) as c:
            return c.execute(
                sa.update(t).where(t.c.appointment_id == appointment_id)
                .values(**values, updated_at=self._now(now))
            ).rowcount == 1

    def requeue_doctor(
        self,
        doctor_id: int,
        *,
        now: datetime,
        from_states: Sequence[str] = ("waiting_reconnect",),
        conn: sa.Connection | None = None,
    ) -> int:
        """After a reconnect: parked items of that doctor become due (state ``pending``)."""
        t = self.tables.items
        stamp = self._now(now)
        with self._tx(conn) as c:
            return c.execute(
                sa.update(t)
                .where(t.c.doctor_id == doctor_id, t.c.state.in_(list(from_states)))
                .values(state="pending", next_attempt_at=stamp, updated_at=stamp)
            ).rowcount

    def retry_failed(
        self, *, now: datetime, doctor_id: int | None = None, conn: sa.Connection | None = None
    ) -> int:
        """``kc-sidecar retry``: failed items become due again with a fresh attempt count."""
        t = self.tables.items
        stamp = self._now(now)
        where = [t.c.state == "failed"]
        if doctor_id is not None:
            where.append(t.c.doctor_id == doctor_id)
        with self._tx(conn) as c:
            return c.execute(
                sa.update(t).where(*where)
                .values(state="pending", attempts=0, next_attempt_at=stamp, updated_at=stamp)
            ).rowcount

    def count_by_state(self, *, conn: sa.Connection | None = None) -> dict[str, int]:
        t = self.tables.items
        with self._tx(conn) as c:
            rows = c.execute(sa.select(t.c.state, sa.func.count()).group_by(t.c.state)).all()
        return {state: int(n) for state, n in rows}

    def list_items(
        self,
        *,
        states: Sequence[str] | None = None,
        doctor_id: int | None = None,
        limit: int = 100,
        conn: sa.Connection | None = None,
    ) -> list[Item]:
        t = self.tables.items
        query = sa.select(t).order_by(t.c.appointment_id).limit(limit)
        if states is not None:
            query = query.where(t.c.state.in_(list(states)))
        if doctor_id is not None:
            query = query.where(t.c.doctor_id == doctor_id)
        with self._tx(conn) as c:
            return [_record(Item, row) for row in c.execute(query)]  # type: ignore[misc]

    # -- cursors --

    def get_cursor(
        self, name: str, default: str | None = None, *, conn: sa.Connection | None = None
    ) -> str | None:
        t = self.tables.cursor
        with self._tx(conn) as c:
            row = c.execute(sa.select(t.c.value).where(t.c.name == name)).first()
        return default if row is None else row.value

    def set_cursor(self, name: str, value: str, *, conn: sa.Connection | None = None) -> None:
        t = self.tables.cursor
        stamp = self._now(None)
        with self._tx(conn) as c:
            updated = c.execute(
                sa.update(t).where(t.c.name == name).values(value=value, updated_at=stamp)
            ).rowcount
            if not updated:
                inserted = c.execute(
                    self._insert_ignore(t).values(name=name, value=value, updated_at=stamp)
                ).rowcount
                if not inserted:
                    c.execute(
                        sa.update(t).where(t.c.name == name).values(value=value,
                                                                    updated_at=stamp)
                    )

    def get_or_create_cursor(
        self, name: str, make: Callable[[], str], *, conn: sa.Connection | None = None
    ) -> str:
        """The stored value, or ``make()`` stored first-writer-wins (e.g. the site key)."""
        t = self.tables.cursor
        with self._tx(conn) as c:
            c.execute(
                self._insert_ignore(t).values(name=name, value=make(), updated_at=self._now(None))
            )
            return str(c.execute(sa.select(t.c.value).where(t.c.name == name)).scalar_one())

    # -- doctors --

    def get_doctor(
        self, doctor_id: int, *, conn: sa.Connection | None = None
    ) -> DoctorState | None:
        t = self.tables.doctors
        with self._tx(conn) as c:
            row = c.execute(sa.select(t).where(t.c.doctor_id == doctor_id)).first()
        return _record(DoctorState, row)

    def list_doctors(self, *, conn: sa.Connection | None = None) -> list[DoctorState]:
        t = self.tables.doctors
        with self._tx(conn) as c:
            rows = c.execute(sa.select(t).order_by(t.c.doctor_id)).all()
        return [_record(DoctorState, row) for row in rows]  # type: ignore[misc]

    def upsert_doctor(
        self, doctor_id: int, *, conn: sa.Connection | None = None, **fields: Any
    ) -> None:
        values = _checked_fields(fields, _DOCTOR_FIELDS)
        t = self.tables.doctors
        stamp = self._now(None)
        with self._tx(conn) as c:
            c.execute(self._insert_ignore(t).values(doctor_id=doctor_id, updated_at=stamp))
            if values:
                c.execute(
                    sa.update(t).where(t.c.doctor_id == doctor_id)
                    .values(**values, updated_at=stamp)
                )

    def set_sync_token(
        self,
        doctor_id: int,
        token: str | None,
        *,
        now: datetime,
        conn: sa.Connection | None = None,
    ) -> None:
        """Save a sync token — only after the changes it covers were applied (pass ``conn``)."""
        self.upsert_doctor(doctor_id, conn=conn, sync_token=token, last_sync_at=now)

    def acquire_refresh_lock(self, doctor_id: int, *, now: datetime, lease_seconds: float) -> bool:
        """One token refresh at a time per doctor, across processes. True if we hold it."""
        t = self.tables.doctors
        stamp = self._now(now)
        with self.engine.begin() as c:
            c.execute(self._insert_ignore(t).values(doctor_id=doctor_id, updated_at=stamp))
            result = c.execute(
                sa.update(t)
                .where(t.c.doctor_id == doctor_id,
                       sa.or_(t.c.refresh_lock_until.is_(None), t.c.refresh_lock_until <= stamp))
                .values(refresh_lock_until=stamp + timedelta(seconds=lease_seconds))
            )
            return result.rowcount == 1

    def release_refresh_lock(
        self, doctor_id: int, *, refreshed_at: datetime | None = None
    ) -> None:
        values: dict[str, Any] = {"refresh_lock_until": None}
        if refreshed_at is not None:
            values["last_refresh_at"] = refreshed_at
        self.upsert_doctor(doctor_id, **values)

    # -- channels --

    def add_channel(
        self,
        channel_id: str,
        doctor_id: int,
        token: str,
        *,
        now: datetime,
        expiration: datetime | None = None,
        resource_id: str | None = None,
        conn: sa.Connection | None = None,
    ) -> Channel:
        if not token:
            raise ValueError("a channel needs a non-empty token")
        values = dict(
            channel_id=channel_id, doctor_id=doctor_id, resource_id=resource_id,
            token_hash=token_digest(token), expiration=_naive_utc(expiration),
            created_at=self._now(now), stopped_at=None,
        )
        with self._tx(conn) as c:
            c.execute(sa.insert(self.tables.channels).values(**values))
        return Channel(**{k: _aware(v) for k, v in values.items()})  # type: ignore[arg-type]

    def set_channel_watch(
        self,
        channel_id: str,
        *,
        resource_id: str,
        expiration: datetime | None,
        conn: sa.Connection | None = None,
    ) -> bool:
        """Record what Google answered to ``events.watch``."""
        t = self.tables.channels
        with self._tx(conn) as c:
            return c.execute(
                sa.update(t).where(t.c.channel_id == channel_id)
                .values(resource_id=resource_id, expiration=_naive_utc(expiration))
            ).rowcount == 1

    def get_channel(self, channel_id: str, *, conn: sa.Connection | None = None) -> Channel | None:
        t = self.tables.channels
        with self._tx(conn) as c:
            row = c.execute(sa.select(t).where(t.c.channel_id == channel_id)).first()
        return _record(Channel, row)

    def verify_channel(self, channel_id: str, token: str | None) -> Channel | None:
        """The live channel if ``token`` is its token (constant-time), else None."""
        channel = self.get_channel(channel_id) if channel_id else None
        expected = channel.token_hash if channel is not None else token_digest(
            secrets.token_hex(16))
        matches = hmac.compare_digest(expected, token_digest(token or ""))
        if channel is None or not matches or not token or channel.stopped_at is not None:
            return None
        return channel

    def active_channels(
        self, *, doctor_id: int | None = None, conn: sa.Connection | None = None
    ) -> list[Channel]:
        t = self.tables.channels
        query = sa.select(t).where(t.c.stopped_at.is_(None)).order_by(t.c.created_at)
        if doctor_id is not None:
            query = query.where(t.c.doctor_id == doctor_id)
        with self._tx(conn) as c:
            return [_record(Channel, row) for row in c.execute(query)]  # type: ignore[misc]

    def channels_expiring_before(
        self, when: datetime, *, conn: sa.Connection | None = None
    ) -> list[Channel]:
        """Live channels to renew: expiring before ``when`` (or with no known expiration)."""
        t = self.tables.channels
        query = (
            sa.select(t)
            .where(t.c.stopped_at.is_(None),
                   sa.or_(t.c.expiration.is_(None), t.c.expiration < _naive_utc(when)))
            .order_by(t.c.expiration)
        )
        with self._tx(conn) as c:
            return [_record(Channel, row) for row in c.execute(query)]  # type: ignore[misc]

    def mark_channel_stopped(
        self, channel_id: str, *, now: datetime, conn: sa.Connection | None = None
    ) -> bool:
        t = self.tables.channels
        with self._tx(conn) as c:
            return c.execute(
                sa.update(t).where(t.c.channel_id == channel_id, t.c.stopped_at.is_(None))
                .values(stopped_at=self._now(now))
            ).rowcount == 1

    def delete_channel(self, channel_id: str, *, conn: sa.Connection | None = None) -> bool:
        t = self.tables.channels
        with self._tx(conn) as c:
            return c.execute(sa.delete(t).where(t.c.channel_id == channel_id)).rowcount == 1

    # -- audit log --

    def log_event(
        self,
        action: str,
        *,
        now: datetime | None = None,
        appointment_id: int | None = None,
        doctor_id: int | None = None,
        event_id: str | None = None,
        detail: str | None = None,
        conn: sa.Connection | None = None,
    ) -> None:
        """Record an unlink/recreate/adopt decision (never put secrets in ``detail``)."""
        with self._tx(conn) as c:
            c.execute(
                sa.insert(self.tables.events_log).values(
                    at=self._now(now), action=action[:64], appointment_id=appointment_id,
                    doctor_id=doctor_id, event_id=event_id,
                    detail=None if detail is None else _clip_error(detail),
                )
            )

    def recent_events(
        self,
        *,
        limit: int = 50,
        appointment_id: int | None = None,
        conn: sa.Connection | None = None,
    ) -> list[LogEntry]:
        t = self.tables.events_log
        query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if appointment_id is not None:
            query = query.where(t.c.appointment_id == appointment_id)
        with self._tx(conn) as c:
            return [_record(LogEntry, row) for row in c.execute(query)]  # type: ignore[misc]

