"""Database plumbing shared by every module: engine creation and named cross-process locks.

MariaDB/MySQL locks are ``GET_LOCK`` named locks held by one pooled connection; SQLite (demo only)
uses an ``fcntl`` file lock next to the database file plus a process-local lock, because SQLite
has no named locks and several threads of one process share the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


class LockTimeout(Exception):
    """The named lock was not acquired within the timeout."""


def create_engine(url: str, *, idle_ping_seconds: float | None = None,
                  **kwargs: object) -> sa.Engine:
    """An engine tuned for a long-running service beside WordPress.

    MariaDB/MySQL: connections idle for a while are pinged before use (survives MariaDB
    restarts, see :func:`_ping_when_idle`); SQLite gets WAL and a busy timeout so the web
    threads and the scheduler can share the demo database.
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                                  **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    kwargs.setdefault("pool_recycle", 3600)
    engine = sa.create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, IDLE_PING_SECONDS if idle_ping_seconds is None
                        else idle_ping_seconds)
    return engine


#: a pooled connection idle longer than this is pinged before it is handed out
IDLE_PING_SECONDS = 2.0


def _ping_when_idle(engine: sa.Engine, idle_seconds: float) -> None:
    """Pessimistic disconnect handling without a round trip on every checkout.

    ``pool_pre_ping`` pings on *every* checkout; the sync engine checks connections out several
    times per meeting, so those pings were a large share of its database round trips. A
    connection used within the last ``idle_seconds`` was alive a moment ago; one idle longer
    (the case of a MariaDB restart or a server-side timeout) is pinged, and a failed ping makes
    the pool replace it (``DisconnectionError``, SQLAlchemy's documented custom-ping hook). A
    server that dies while a connection is in hot use fails that statement; SQLAlchemy then
    invalidates the whole pool and the work item is retried, as with ``pool_pre_ping``.
    """

    @sa.event.listens_for(engine, "checkin")
    def _remember_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["kcsc_checked_in"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("kcsc_checked_in")
        if last is None or time.monotonic() - last < idle_seconds:
            return  # new (just connected) or used a moment ago
        try:
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except Exception as err:
            raise sa.exc.DisconnectionError(f"idle connection failed its ping: {err}") from err


def _mysql_lock_name(engine: sa.Engine, name: str) -> str:
    # GET_LOCK names are server-wide: scope them to the database, and keep them under 64 chars.
    scoped = f"{engine.url.database}:{name}"
    if len(scoped) <= 64:
        return scoped
    return "kcsc:" + hashlib.sha256(scoped.encode()).hexdigest()[:48]


def _process_lock(key: str) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(key, threading.Lock())


@contextlib.contextmanager
def named_lock(engine: sa.Engine, name: str, timeout: float = 10.0) -> Iterator[None]:
    """Hold a lock named ``name`` across threads, processes and replicas sharing the database.

    Raises :class:`LockTimeout` when it cannot be had within ``timeout`` seconds; ``timeout=0``
    means try once.
    """
    if engine.dialect.name in ("mysql", "mariadb"):
        lock_name = _mysql_lock_name(engine, name)
        with engine.connect() as conn:
            got = conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"),
                               {"n": lock_name, "t": timeout}).scalar()
            if got != 1:
                raise LockTimeout(name)
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": lock_name})
        return
    yield from _file_lock(engine, name, timeout)


def _file_lock(engine: sa.Engine, name: str, timeout: float) -> Iterator[None]:
    db_path = engine.url.database or ""
    base = Path(db_path).parent if db_path and db_path != ":memory:" else Path(
        os.environ.get("TMPDIR", "/tmp"))  # noqa: S108 - lock files only
    digest = hashlib.sha256(f"{db_path}:{name}".encode()).hexdigest()[:24]
    lock_path = base / f".kcsc-lock-{digest}"
    plock = _process_lock(str(lock_path))
    acquired = plock.acquire(timeout=timeout) if timeout > 0 else plock.acquire(blocking=False)
    if not acquired:
        raise LockTimeout(name)
    try:
        with open(lock_path, "a+") as fh:
            if not _flock_with_timeout(fh.fileno(), timeout):
                raise LockTimeout(name)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        plock.release()


def _flock_with_timeout(fd: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
