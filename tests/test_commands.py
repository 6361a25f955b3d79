"""Operator commands against MariaDB and the Google emulator over HTTP: ``sync-once``,
``status``, ``retry``, ``backfill`` and ``serve`` (the latter two also as real processes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time as systime
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sidecar.cli import main
from sidecar.clock import SystemClock
from tests.sync.conftest import SyncWorld, make_world

# sidecar.cli.main configures process logging (tests/conftest.py restores it)
pytestmark = pytest.mark.usefixtures("restore_root_logger")

ROOT = Path(__file__).resolve().parent.parent
KC_SIDECAR = [sys.executable, "-m", "sidecar.cli"]




@pytest.fixture
def world(sync_db: str) -> Iterator[SyncWorld]:
    yield from make_world(sync_db, SystemClock())  # type: ignore[arg-type]


@pytest.fixture
def env(world: SyncWorld, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The world's configuration as KCSC_* variables (set for in-process main() too)."""
    s = world.runtime.settings
    values = {
        "KCSC_DATABASE__URL": str(s.database.url),
        "KCSC_SIDECAR__SECRET_KEY": s.sidecar.secret_key,
        "KCSC_SIDECAR__PUBLIC_URL": s.sidecar.public_url,
        "KCSC_GOOGLE__CLIENT_ID": s.google.client_id,
        "KCSC_GOOGLE__CLIENT_SECRET": s.google.client_secret,
        "KCSC_GOOGLE__AUTH_URI": s.google.auth_uri,
        "KCSC_GOOGLE__TOKEN_URI": s.google.token_uri,
        "KCSC_GOOGLE__REVOKE_URI": s.google.revoke_uri,
        "KCSC_GOOGLE__API_ENDPOINT": s.google.api_endpoint,
        "KCSC_SYNC__SETTLE_SECONDS": "0",
        "KCSC_SIDECAR__LOG_LEVEL": "WARNING",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KCSC_CONFIG", raising=False)
    return {**os.environ, **values}


def soon(days: int) -> date:
    return date.today() + timedelta(days=days)


def meet_url(world: SyncWorld, appointment_id: int) -> str | None:
    rows = world.mapping(appointment_id)
    return rows[0]["url"] if rows else None


def break_times(world: SyncWorld, appointment_id: int) -> None:
    """An appointment that ends before it starts: a permanent data error."""
    a = world.runtime.schema.appointments
    with world.engine.begin() as conn:
        row = conn.execute(sa.select(a).where(a.c.id == appointment_id)).mappings().one()
        conn.execute(sa.update(a).where(a.c.id == appointment_id).values(
            appointment_end_time=time(8, 0),
            appointment_end_utc=row["appointment_start_utc"] - timedelta(hours=2)))


def fix_times(world: SyncWorld, appointment_id: int, day: date) -> None:
    with world.engine.begin() as conn:
        world.kc.reschedule(conn, appointment_id, day, time(10, 0))


def test_sync_once_process_creates_meetings_and_exits_1_when_one_fails(world, env):
    doctor, service, _ = world.doctor()
    good = [world.book(doctor, service, soon(2), time(9, 0)),
            world.book(doctor, service, soon(3), time(11, 0))]
    bad = world.book(doctor, service, soon(4), time(10, 0))
    break_times(world, bad.id)

    proc = subprocess.run([*KC_SIDECAR, "sync-once"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    [summary] = proc.stdout.splitlines()
    assert "created 2" in summary and "failed 1" in summary
    assert f"appointment {bad.id}" in proc.stderr
    assert all((meet_url(world, b.id) or "").startswith("https://meet.google.com/")
               for b in good)
    assert meet_url(world, bad.id) is None

    # Nothing new: another cycle succeeds and creates nothing.
    proc = subprocess.run([*KC_SIDECAR, "sync-once"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "created 0" in proc.stdout and "failed 0" in proc.stdout


def test_status_json_and_table_show_each_doctors_state(world, env, capsys):
    doctor, service, email = world.doctor()
    other, other_service, _ = world.doctor(connected=False)
    world.book(doctor, service, soon(2))
    bad = world.book(doctor, service, soon(3))
    break_times(world, bad.id)
    world.book(other, other_service, soon(2))
    assert main(["sync-once"]) == 1
    capsys.readouterr()

    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {d["doctor_id"]: d for d in report["doctors"]}
    mine = rows[doctor]
    assert mine["connection"] == "connected" and mine["google_email"] == email
    assert (mine["synced"], mine["failed"], mine["pending"]) == (1, 1, 0)
    assert "ends" in mine["last_error"] and mine["last_sync_at"].endswith("Z")
    theirs = rows[other]
    assert theirs["connection"] == "not_connected" and theirs["waiting_reconnect"] == 1
    assert report["items"] == {"failed": 1, "synced": 1, "waiting_reconnect": 1}

    assert main(["status"]) == 0
    table = capsys.readouterr().out
    header, *lines = table.splitlines()
    assert header.split()[:3] == ["ID", "DOCTOR", "CONNECTION"]
    assert any(line.startswith(str(doctor)) and "connected" in line and email in line
               for line in lines)
    assert "items: failed 1, synced 1, waiting_reconnect 1" in table


def test_retry_processes_failed_items_now(world, env, capsys):
    doctor, service, _ = world.doctor()
    bad = world.book(doctor, service, soon(3))
    break_times(world, bad.id)
    assert main(["sync-once"]) == 1
    assert main(["retry"]) == 1  # still broken: fails again, reported
    out = capsys.readouterr()
    assert "failed again 1" in out.out and f"appointment {bad.id}" in out.err

    fix_times(world, bad.id, soon(3))
    assert main(["retry", "--doctor", str(doctor)]) == 0
    assert "created 1" in capsys.readouterr().out
    assert meet_url(world, bad.id) is not None
    assert main(["retry"]) == 0
    assert "no failed items" in capsys.readouterr().out


def test_retry_for_an_unknown_user_is_an_error(world, env, capsys):
    assert main(["retry", "--doctor", "987654"]) == 1
    assert "no WordPress user 987654" in capsys.readouterr().err


def test_backfill_from_a_date_creates_only_later_meetings_with_progress(world, env, capsys):
    doctor, service, _ = world.doctor()
    early = world.book(doctor, service, soon(2))
    late = [world.book(doctor, service, soon(9)), world.book(doctor, service, soon(10))]
    in_person, checkup, _ = world.doctor(telemed=False)
    world.book(in_person, checkup, soon(9))

    assert main(["backfill", "--from", soon(8).isoformat()]) == 0
    out = capsys.readouterr()
    assert "2/2 meetings" in out.err
    assert "2 telemedicine appointments; with meeting 2" in out.out
    assert all(meet_url(world, b.id) for b in late)
    assert meet_url(world, early.id) is None

    assert main(["backfill"]) == 0  # from today: the early one too; the others are kept
    assert "3 telemedicine appointments; with meeting 3" in capsys.readouterr().out
    assert meet_url(world, early.id) is not None
    assert len(world.calls("events.insert")) == 3


def test_backfill_bad_date_is_a_usage_error(env, capsys):
    assert main(["backfill", "--from", "next tuesday"]) == 2
    assert "is not a date" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def test_serve_process_serves_syncs_and_stops_on_sigterm(world, env):
    doctor, service, _ = world.doctor()
    port = _free_port()
    env = {**env, "KCSC_SIDECAR__LISTEN": f"127.0.0.1:{port}", "KCSC_SYNC__POLL_SECONDS": "1"}
    proc = subprocess.Popen([*KC_SIDECAR, "serve"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = systime.monotonic() + 20
        while _get(f"http://127.0.0.1:{port}/readyz") != 200:
            assert proc.poll() is None, proc.communicate()
            assert systime.monotonic() < deadline, "serve never became ready"
            systime.sleep(0.1)
        assert _get(f"http://127.0.0.1:{port}/healthz") == 200
        booking = world.book(doctor, service, soon(2), time(14, 0))
        started = datetime.now()
        while meet_url(world, booking.id) is None:
            assert (datetime.now() - started).total_seconds() < 10, "no Meet link from serve"
            systime.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _get(f"http://127.0.0.1:{port}/healthz") == 0
