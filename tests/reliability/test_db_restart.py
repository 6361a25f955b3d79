"""Database restart: MariaDB stops and starts in the middle of a backfill.

While it is down ``/readyz`` answers 503 naming the database, the sidecar process keeps running
(no crash loop), and once MariaDB is back readiness recovers by itself and the backfill finishes
with every appointment synced exactly once.

MariaDB is shared by every test, so this runs only in the serial stage of ``scripts/test``
(``KCSC_ALLOW_DB_RESTART=1``, no xdist); MariaDB is started again whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta

import pytest

from sidecar.clock import SystemClock
from sidecar.web import create_app
from tests.reliability.audit import audit
from tests.reliability.clinic import Worker, book_clinic, report, sidecar_env
from tests.reliability.conftest import count

pytestmark = [
    pytest.mark.dbrestart,
    pytest.mark.skipif(os.environ.get("KCSC_ALLOW_DB_RESTART") != "1",
                       reason="stops the shared MariaDB: runs in the serial stage of scripts/test"),
]

MARIADBD = "/usr/sbin/mariadbd"
ADMIN = ["mariadb-admin", "--host=127.0.0.1", "--user=root", "--connect-timeout=2"]


def _ping() -> bool:
    return subprocess.run([*ADMIN, "ping"], capture_output=True, check=False).returncode == 0


def _running() -> bool:
    return subprocess.run(["start-stop-daemon", "--status", "--exec", MARIADBD],
                          capture_output=True, check=False).returncode == 0


def _wait(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def start_mariadb() -> None:
    if not _ping():
        subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec",
                        MARIADBD], check=True, capture_output=True)
        _wait(_ping, 60, "MariaDB to answer ping")


@contextmanager
def mariadb_stopped() -> Iterator[None]:
    """MariaDB is down inside the block and up again after it, even on failure."""
    try:
        subprocess.run([*ADMIN, "shutdown"], check=True, capture_output=True)
        _wait(lambda: not _running(), 60, "mariadbd to exit")
        yield
    finally:
        start_mariadb()


def test_mariadb_restart_mid_backfill(world_factory, log_tap):
    appointments = count(90, 600)
    world = world_factory(clock=SystemClock(), request_log_limit=1_000_000)
    bookings = book_clinic(world, appointments, doctors=3,
                           start_day=date.today() + timedelta(days=2))
    client = create_app(world.runtime).test_client()
    assert client.get("/readyz").status_code == 200
    worker = Worker(sidecar_env(world))
    base = len(world.google.request_log)
    _wait(lambda: len(world.google.request_log) >= base + len(bookings.qualifying) // 3
          or not worker.alive(), 60, "the backfill to get going")
    assert worker.alive(), worker.output()

    with mariadb_stopped():
        down = client.get("/readyz")
        assert down.status_code == 503
        assert "database" in down.get_json()["problems"]
        assert world.runtime.readiness().keys() == {"database"}
        time.sleep(1.5)  # the outage itself: the worker keeps hitting a dead database
        assert worker.alive(), "the sidecar process died while the database was down"
    recovery = _wait(lambda: world.runtime.readiness() == {}, 30, "readiness to recover")
    assert client.get("/readyz").status_code == 200

    assert worker.wait(timeout=count(120, 600)) == 0
    logs = [("runner", worker.output())]
    result = audit(world.google, world.engine, world.runtime.schema.meet_mappings,
                   bookings.qualifying, bookings.not_qualifying)
    report("db_restart", appointments=appointments, qualifying=len(bookings.qualifying),
           restarts=1, readiness_recovered_after_s=round(recovery, 2),
           duplicates=len(result.duplicates) + len(result.double_inserts),
           lost=len(result.lost), orphans=len(result.orphans))
    assert result.problems == [], result.summary() + "\n" + "\n".join(result.problems[:20])
    assert log_tap.findings(since=log_tap.mark(), extra_text=logs) == []
