"""The sidecar's own tables on MariaDB and SQLite: migrations, leases, cursors, channels."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from sidecar.db import create_engine
from sidecar.state import LATEST_VERSION, MigrationError, StateError, StateStore
from wp_schema.names import TableNames

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=["mariadb", "sqlite"])
def engine(request, new_mysql_database, tmp_path_factory):
    """One database per backend for the module; tests needing fresh tables use own prefixes."""
    if request.param == "mariadb":
        eng = create_engine(new_mysql_database())
    else:
        eng = create_engine(f"sqlite:///{tmp_path_factory.mktemp('state') / 'site.db'}")
    StateStore(eng, TableNames("wp_")).migrate()
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine, clock):
    """The migrated ``wp_kcsc_*`` tables, emptied for each test."""
    s = StateStore(engine, TableNames("wp_"), clock)
    with engine.begin() as conn:
        for table in (s.tables.items, s.tables.cursor, s.tables.doctors, s.tables.channels,
                      s.tables.events_log):
            conn.execute(sa.delete(table))
    return s


def seed(store: StateStore, n: int, *, doctor_id: int = 7, at: datetime = NOW) -> None:
    with store.engine.begin() as conn:
        for i in range(1, n + 1):
            store.ensure_item(i, doctor_id, now=at - timedelta(seconds=n - i), conn=conn)


# --- migrations ---------------------------------------------------------------------------------


def test_migrate_creates_prefixed_tables_and_is_idempotent(engine, clock):
    store = StateStore(engine, TableNames("wp_", 3), clock)
    assert store.schema_version() == 0
    assert store.migrate() == LATEST_VERSION
    assert store.migrate() == LATEST_VERSION
    tables = set(sa.inspect(engine).get_table_names())
    for name in ("schema_version", "items", "cursor", "doctors", "channels", "events_log"):
        assert f"wp_3_kcsc_{name}" in tables
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT version FROM wp_3_kcsc_schema_version")).all()
    assert [r.version for r in rows] == list(range(1, LATEST_VERSION + 1))
    indexes = {tuple(ix["column_names"]) for ix in sa.inspect(engine).get_indexes(
        "wp_3_kcsc_items")}
    assert ("state", "next_attempt_at") in indexes and ("doctor_id",) in indexes


def test_concurrent_migrations_do_not_conflict(engine, clock):
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            barrier.wait()
            StateStore(engine, TableNames("cm_"), clock).migrate()
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert StateStore(engine, TableNames("cm_"), clock).schema_version() == LATEST_VERSION


def test_newer_schema_than_code_is_refused(engine, clock):
    store = StateStore(engine, TableNames("nv_"), clock)
    store.migrate()
    with store.engine.begin() as conn:
        conn.execute(sa.insert(store.tables.schema_version).values(
            version=LATEST_VERSION + 5, name="future", applied_at=NOW.replace(tzinfo=None)))
    with pytest.raises(MigrationError, match="newer than this sidecar"):
        store.migrate()


# --- items --------------------------------------------------------------------------------------


def test_ensure_item_is_insert_if_absent(store):
    assert store.ensure_item(5, 7, now=NOW) is True
    store.upsert_item(5, state="synced", event_id="kcscabc", fingerprint="f1")
    assert store.ensure_item(5, 7, now=NOW) is False
    item = store.get_item(5)
    assert (item.state, item.event_id, item.fingerprint) == ("synced", "kcscabc", "f1")


def test_upsert_creates_with_doctor_and_validates(store):
    store.upsert_item(9, doctor_id=3, state="pending", next_attempt_at=NOW)
    item = store.get_item(9)
    assert item.doctor_id == 3 and item.next_attempt_at == NOW
    with pytest.raises(StateError, match="doctor_id is required"):
        store.upsert_item(10, state="pending")
    with pytest.raises(ValueError, match="unknown item state"):
        store.upsert_item(9, state="exploded")
    with pytest.raises(TypeError, match="unknown fields"):
        store.upsert_item(9, colour="red")
    assert store.get_item(10) is None


def test_writes_join_the_callers_transaction(store):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.engine.begin() as conn:
        store.ensure_item(1, 7, now=NOW, conn=conn)
        store.set_cursor("last_appointment_id", "1", conn=conn)
        raise Boom
    assert store.get_item(1) is None
    assert store.get_cursor("last_appointment_id") is None


def test_claim_returns_due_items_oldest_first_and_leases_them(store):
    seed(store, 5)
    store.upsert_item(5, next_attempt_at=NOW + timedelta(minutes=1))  # not due yet
    claimed = store.claim_due_items(NOW, 3, "w1", 60)
    assert [i.appointment_id for i in claimed] == [1, 2, 3]
    assert all(i.claimed_by == "w1" and i.claim_token for i in claimed)
    assert claimed[0].claimed_until == NOW + timedelta(seconds=60)
    again = store.claim_due_items(NOW, 10, "w2", 60)
    assert [i.appointment_id for i in again] == [4]
    assert store.claim_due_items(NOW, 10, "w3", 60) == []


def test_a_claim_that_loses_its_candidates_to_a_concurrent_claim_takes_others(store):
    """Two replicas read the same oldest due items; the one whose update comes second must not
    come back empty-handed (its caller would take the queue for empty and stop)."""
    if store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite (demo) has one writer process; the race needs a second one")
    seed(store, 10)
    taken: list[list[int]] = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def competitor_first(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE") and not taken:
            other = StateStore(sa.create_engine(store.engine.url), TableNames("wp_"), None)
            taken.append([i.appointment_id for i in other.claim_due_items(NOW, 5, "w2", 60)])
            other.engine.dispose()

    try:
        mine = [i.appointment_id for i in store.claim_due_items(NOW, 5, "w1", 60)]
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", competitor_first)
    assert taken == [[1, 2, 3, 4, 5]]
    assert mine == [6, 7, 8, 9, 10]


def test_per_doctor_claims_skip_doctors_other_workers_keep_busy(store):
    for appt, doctor in ((1, 7), (2, 7), (3, 8), (4, 8), (5, 9)):
        store.ensure_item(appt, doctor, now=NOW)
    assert [i.appointment_id for i in store.claim_due_items(NOW, 1, "w2", 60)] == [1]
    mine = store.claim_due_items(NOW, 10, "w1", 60, per_doctor=1)
    # doctor 7 is busy in w2; w1's own leases (two of doctor 8's) do not hold w1 back
    assert [i.appointment_id for i in mine] == [3, 4, 5]
    assert [i.appointment_id for i in store.claim_due_items(
        NOW, 10, "w1", 60, per_doctor=2)] == [2]  # two allowed: w2 holds one of doctor 7's


def test_parked_states_are_not_claimed(store):
    seed(store, 4)
    store.upsert_item(1, state="failed")
    store.upsert_item(2, state="waiting_reconnect")
    store.upsert_item(3, state="done")
    assert [i.appointment_id for i in store.claim_due_items(NOW, 10, "w", 60)] == [4]


def test_expired_lease_is_reclaimed_and_the_old_worker_loses(store):
    seed(store, 1)
    [first] = store.claim_due_items(NOW, 1, "w1", 30)
    assert store.claim_due_items(NOW + timedelta(seconds=29), 1, "w2", 30) == []
    [second] = store.claim_due_items(NOW + timedelta(seconds=31), 1, "w2", 30)
    assert second.claim_token != first.claim_token
    assert store.mark_synced(first, now=NOW, event_id="e1", fingerprint="old") is False
    assert store.mark_synced(second, now=NOW, event_id="e2", fingerprint="new") is True
    item = store.get_item(1)
    assert (item.state, item.event_id, item.fingerprint, item.claim_token) == (
        "synced", "e2", "new", None)
    assert item.next_attempt_at is None


def test_retry_keeps_the_item_queued_with_error_and_backoff(store):
    seed(store, 1)
    [claim] = store.claim_due_items(NOW, 1, "w", 60)
    assert store.mark_retry(claim, now=NOW, error="HTTP 503 backend error",
                            delay=timedelta(minutes=2))
    item = store.get_item(1)
    assert (item.attempts, item.last_error, item.state) == (1, "HTTP 503 backend error",
                                                            "pending")
    assert item.next_attempt_at == NOW + timedelta(minutes=2)
    assert store.claim_due_items(NOW + timedelta(minutes=1), 5, "w", 60) == []
    [claim] = store.claim_due_items(NOW + timedelta(minutes=2), 5, "w", 60)
    assert claim.attempts == 1


def test_long_errors_are_clipped(store):
    seed(store, 1)
    [claim] = store.claim_due_items(NOW, 1, "w", 60)
    store.mark_failed(claim, now=NOW, error="x" * 10_000)
    assert len(store.get_item(1).last_error) == 2000


def test_release_requires_a_claim(store):
    seed(store, 1)
    with pytest.raises(StateError, match="not claimed"):
        store.mark_done(store.get_item(1), now=NOW)


def test_reconnect_and_retry_requeue_parked_items(store):
    seed(store, 3)
    claims = store.claim_due_items(NOW, 3, "w", 60)
    store.mark_waiting_reconnect(claims[0], now=NOW, error="invalid_grant")
    store.mark_failed(claims[1], now=NOW, error="400 bad request")
    store.mark_done(claims[2], now=NOW)
    assert store.count_by_state() == {"waiting_reconnect": 1, "failed": 1, "done": 1}
    later = NOW + timedelta(hours=1)
    assert store.requeue_doctor(7, now=later) == 1
    assert store.retry_failed(now=later, doctor_id=8) == 0
    assert store.retry_failed(now=later) == 1
    assert [i.appointment_id for i in store.claim_due_items(later, 10, "w", 60)] == [1, 2]
    assert store.get_item(2).attempts == 0
    assert store.requeue(3, now=later) is True
    assert [i.appointment_id for i in store.list_items(states=["pending"])] == [1, 2, 3]


def test_change_announced_during_a_lease_is_not_lost(store):
    seed(store, 3)
    first, second, third = store.claim_due_items(NOW, 3, "w", 60)
    later = NOW + timedelta(seconds=5)
    for item in (first, second, third):
        store.requeue(item.appointment_id, now=later)  # the appointment changed meanwhile
    assert store.mark_synced(first, now=later, event_id="e1", fingerprint="stale")
    assert store.mark_retry(second, now=later, error="503", delay=timedelta(hours=1))
    assert store.mark_waiting_reconnect(third, now=later, error="invalid_grant")
    items = store.get_items([1, 2, 3])
    assert (items[1].state, items[1].next_attempt_at, items[1].event_id) == (
        "pending", later, "e1")
    assert items[2].next_attempt_at == later
    assert (items[3].state, items[3].next_attempt_at) == ("waiting_reconnect", None)
    # A requeue before the claim is consumed by that claim.
    [again] = store.claim_due_items(later, 1, "w", 60)
    assert store.mark_synced(again, now=later, event_id="e1", fingerprint="fresh")
    assert (store.get_item(1).state, store.get_item(1).next_attempt_at) == ("synced", None)


def test_concurrent_claimers_never_share_an_item(store):
    seed(store, 150)
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def worker(name: str) -> None:
        mine: list[int] = []
        try:
            barrier.wait()
            while True:
                batch = store.claim_due_items(NOW, 4, name, 300)
                if not batch:
                    break
                mine.extend(i.appointment_id for i in batch)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
        got[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = Counter(i for ids in got.values() for i in ids)
    assert sorted(counts) == list(range(1, 151))
    assert max(counts.values()) == 1
    with store.engine.connect() as conn:
        owners = dict(conn.execute(sa.text(
            "SELECT appointment_id, claimed_by FROM wp_kcsc_items")).all())
    for name, ids in got.items():
        assert all(owners[i] == name for i in ids)


# --- cursors, doctors, channels, log ------------------------------------------------------------


def test_cursor_roundtrip_and_first_writer_wins(store):
    assert store.get_cursor("scan", "0") == "0"
    store.set_cursor("scan", "41")
    store.set_cursor("scan", "42")
    assert store.get_cursor("scan") == "42"
    assert store.get_or_create_cursor("site_key", lambda: "aaa") == "aaa"
    assert store.get_or_create_cursor("site_key", lambda: "bbb") == "aaa"


def test_doctor_state_and_sync_token(store):
    assert store.get_doctor(7) is None
    store.upsert_doctor(7, google_email="doc@example.com", status="connected")
    store.set_sync_token(7, "CPDAlvWDx70CEPDAlvWDx70CGAU=", now=NOW)
    doctor = store.get_doctor(7)
    assert (doctor.google_email, doctor.status, doctor.sync_token) == (
        "doc@example.com", "connected", "CPDAlvWDx70CEPDAlvWDx70CGAU=")
    assert doctor.last_sync_at == NOW
    store.upsert_doctor(7, status="needs_reconnect", status_reason="invalid_grant")
    assert store.get_doctor(7).sync_token == "CPDAlvWDx70CEPDAlvWDx70CGAU="
    assert [d.doctor_id for d in store.list_doctors()] == [7]


def test_refresh_lock_is_exclusive_until_released_or_expired(store):
    assert store.acquire_refresh_lock(7, now=NOW, lease_seconds=30) is True
    assert store.acquire_refresh_lock(7, now=NOW + timedelta(seconds=10), lease_seconds=30) is False
    assert store.acquire_refresh_lock(7, now=NOW + timedelta(seconds=31), lease_seconds=30) is True
    store.release_refresh_lock(7, refreshed_at=NOW)
    assert store.get_doctor(7).last_refresh_at == NOW
    assert store.acquire_refresh_lock(7, now=NOW, lease_seconds=30) is True


def test_channel_token_is_stored_hashed_and_checked(store):
    token = "tok-" + "a" * 40
    store.add_channel("ch1", 7, token, now=NOW, expiration=NOW + timedelta(days=7))
    store.set_channel_watch("ch1", resource_id="res-1", expiration=NOW + timedelta(days=6))
    with store.engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT * FROM wp_kcsc_channels")).one()._mapping
    assert token not in [str(v) for v in raw.values()]
    channel = store.verify_channel("ch1", token)
    assert channel is not None and channel.resource_id == "res-1"
    assert channel.expiration == NOW + timedelta(days=6)
    assert store.verify_channel("ch1", "tok-wrong") is None
    assert store.verify_channel("ch1", None) is None
    assert store.verify_channel("nope", token) is None
    with pytest.raises(ValueError, match="non-empty token"):
        store.add_channel("ch2", 7, "", now=NOW)


def test_channel_lifecycle(store):
    store.add_channel("old", 7, "t1", now=NOW, expiration=NOW + timedelta(hours=1))
    store.add_channel("new", 7, "t2", now=NOW, expiration=NOW + timedelta(days=7))
    store.add_channel("other", 8, "t3", now=NOW, expiration=NOW + timedelta(days=7))
    expiring = store.channels_expiring_before(NOW + timedelta(days=1))
    assert [c.channel_id for c in expiring] == ["old"]
    assert store.mark_channel_stopped("old", now=NOW) is True
    assert store.mark_channel_stopped("old", now=NOW) is False
    assert store.verify_channel("old", "t1") is None
    assert [c.channel_id for c in store.active_channels(doctor_id=7)] == ["new"]
    assert store.delete_channel("old") is True
    assert store.get_channel("old") is None


def test_events_log(store):
    store.log_event("adopt", now=NOW, appointment_id=1, event_id="e1", detail="php row")
    store.log_event("recreate", now=NOW, appointment_id=1, event_id="e2")
    store.log_event("unlink", now=NOW, appointment_id=2)
    entries = store.recent_events(appointment_id=1)
    assert [e.action for e in entries] == ["recreate", "adopt"]
    assert entries[1].detail == "php row" and entries[1].at == NOW
