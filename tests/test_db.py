"""Named locks exclude each other across connections on MariaDB and across threads on SQLite."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from sidecar.db import LockTimeout, create_engine, named_lock


@pytest.fixture(params=["mariadb", "sqlite"])
def engine(request, new_mysql_database, tmp_path):
    url = new_mysql_database() if request.param == "mariadb" else f"sqlite:///{tmp_path}/site.db"
    eng = create_engine(url)
    yield eng
    eng.dispose()


def test_second_holder_times_out_while_first_holds(engine):
    entered = threading.Event()
    release = threading.Event()
    outcome: list[str] = []

    def holder():
        with named_lock(engine, "doctor-7"):
            entered.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(10)
    try:
        with named_lock(engine, "doctor-7", timeout=0.2):
            outcome.append("acquired")
    except LockTimeout:
        outcome.append("timeout")
    # A different name is independent.
    with named_lock(engine, "doctor-8", timeout=0.2):
        outcome.append("other")
    release.set()
    t.join()
    with named_lock(engine, "doctor-7", timeout=1):
        outcome.append("after-release")
    assert outcome == ["timeout", "other", "after-release"]


def _connection_id(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar())


def _kill(mysql_server, connection_id: int) -> None:
    with mysql_server.connect() as conn:
        conn.execute(sa.text(f"KILL {int(connection_id)}"))


def test_an_idle_pooled_connection_killed_by_the_server_is_replaced_unnoticed(
        new_mysql_database, mysql_server):
    """What a MariaDB restart or wait_timeout does to the pool: the dead connection is pinged
    at checkout (it was idle longer than the threshold, here 0 s) and replaced."""
    engine = create_engine(new_mysql_database(), idle_ping_seconds=0.0, pool_size=1)
    try:
        first = _connection_id(engine)
        _kill(mysql_server, first)
        assert _connection_id(engine) != first  # no error reached the caller
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(new_mysql_database, mysql_server):
    """The hot path skips the ping round trip: within the idle threshold a dead connection is
    handed out as is, and the statement fails (the work item's own retry handles it)."""
    engine = create_engine(new_mysql_database(), idle_ping_seconds=3600.0, pool_size=1)
    try:
        _kill(mysql_server, _connection_id(engine))
        with pytest.raises(sa.exc.OperationalError):
            _connection_id(engine)
        _connection_id(engine)  # the failure invalidated the pool: the next use reconnects
    finally:
        engine.dispose()
