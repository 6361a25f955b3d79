"""What every benchmark stands on: MariaDB databases, the emulator process, a wired clinic.

* :func:`scratch_database` — a throw-away MariaDB database with the KiviCare v4 schema;
* :class:`EmulatorProcess` — ``bench.emulator_proc`` in a child process, controlled over HTTP;
* :func:`make_clinic` — settings, runtime (system clock), Google wiring and ``OutboundSync`` on
  a database, plus connected doctors with a telemedicine service each (:class:`Clinic`);
* small helpers: resident memory, machine facts, percentiles.

The MariaDB server is ``KC_BENCH_MYSQL`` (else ``KCSC_TEST_MYSQL``, else root on 127.0.0.1:3306).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import secrets
import statistics
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

import sqlalchemy as sa

from bench.emulator_proc import CLIENT_ID, CLIENT_SECRET
from sidecar.clock import SystemClock
from sidecar.config import (
    DatabaseSettings,
    GoogleSettings,
    Settings,
    SidecarSettings,
    SyncSettings,
)
from sidecar.db import create_engine
from sidecar.emulator.testing import grant
from sidecar.kc_seed import KiviCareWriter
from sidecar.runtime import Runtime, build_runtime
from sidecar.services import attach_google
from sidecar.sync.outbound import OutboundSync
from wp_schema.ddl import create_site
from wp_schema.names import TableNames

SERVER_URL = os.environ.get(
    "KC_BENCH_MYSQL", os.environ.get("KCSC_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306")
).rstrip("/")
# The dev server's per-request access log (to stderr) would be timed too; production runs
# gunicorn. Warnings and errors still show.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

SITE_URL = "http://clinic.bench"
PUBLIC_URL = "http://clinic.bench/kc-sidecar"


def server_engine() -> sa.Engine:
    return sa.create_engine(SERVER_URL + "/", pool_pre_ping=True)


def database_url(name: str) -> str:
    return f"{SERVER_URL}/{name}?charset=utf8mb4"


@contextlib.contextmanager
def scratch_database(schema: bool = True) -> Iterator[str]:
    """A fresh database (v4 schema, mapping shape c), dropped afterwards; yields its URL."""
    name = "kcsc_bench_" + secrets.token_hex(5)
    server = server_engine()
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                             "COLLATE utf8mb4_unicode_520_ci"))
    url = database_url(name)
    try:
        if schema:
            engine = create_engine(url)
            create_site(engine, TableNames(), kivicare="v4", mapping_shape="c")
            engine.dispose()
        yield url
    finally:
        with server.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


class EmulatorProcess:
    """``bench.emulator_proc`` in a child process; stops when its stdin closes."""

    def __init__(self, *, latency: float = 0.0, quota: int = 600, pending_fraction: float = 0.0,
                 pending_seconds: float = 1.0, seed: int = 7) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.emulator_proc", "--latency", str(latency),
             "--quota", str(quota), "--pending-fraction", str(pending_fraction),
             "--pending-seconds", str(pending_seconds), "--seed", str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"emulator process did not start (got {line!r})")
        self.url = line

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as resp:
            return json.loads(resp.read() or b"null")

    def post(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"null")

    def requests(self, api_method: str | None = None) -> list[dict[str, Any]]:
        query = "?" + urllib.parse.urlencode({"api_method": api_method}) if api_method else ""
        data = self.get("/_emulator/requests" + query)
        return data["requests"] if isinstance(data, dict) else data

    def clear_requests(self) -> None:
        req = urllib.request.Request(self.url + "/_emulator/requests", method="DELETE")
        urllib.request.urlopen(req, timeout=60).close()

    def set_latency(self, seconds: float, method: str = "*") -> None:
        self.post("/_emulator/latency", {"seconds": seconds, "method": method})

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Clinic:
    runtime: Runtime
    engine: sa.Engine
    kc: KiviCareWriter
    outbound: OutboundSync
    clinic_id: int
    patient_id: int
    doctors: list[tuple[int, int, str]] = field(default_factory=list)  # (id, service, email)

    def book(self, doctor: tuple[int, int, str], day: date, start: time,
             conn: sa.Connection | None = None) -> int:
        def run(c: sa.Connection) -> int:
            return self.kc.book(c, doctor_id=doctor[0], patient_id=self.patient_id,
                                clinic_id=self.clinic_id, service_ids=[doctor[1]], day=day,
                                start=start, now=self.runtime.clock.now()).id
        if conn is not None:
            return run(conn)
        with self.engine.begin() as c:
            return run(c)

    def close(self) -> None:
        self.engine.dispose()


def bench_settings(url: str, emulator_url: str, sync: SyncSettings | None = None) -> Settings:
    return Settings(
        database=DatabaseSettings(url=url),
        google=GoogleSettings(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
            auth_uri=emulator_url + "/o/oauth2/v2/auth", token_uri=emulator_url + "/token",
            revoke_uri=emulator_url + "/revoke", api_endpoint=emulator_url + "/",
            request_timeout=30.0),
        sidecar=SidecarSettings(public_url=PUBLIC_URL, secret_key="bench-secret-key-0123456789"),
        sync=sync or SyncSettings(settle_seconds=0),
    )


def connect_doctor(runtime: Runtime, engine: sa.Engine, doctor_id: int, email: str) -> None:
    """The real OAuth flow against the emulator (auto-approve), tokens stored as GM4 does."""
    token = grant(runtime.settings, email)
    with engine.begin() as conn:
        runtime.accounts.store_connection(conn, doctor_id, token, runtime.clock.now(),
                                          google_email=email)


def make_clinic(url: str, emulator_url: str, *, doctors: int, sync: SyncSettings | None = None,
                max_workers: int = 8, per_doctor: int = 1, pool_size: int = 10,
                seed_site: bool = True,
                connect: bool = True, existing_doctors: list[tuple[int, int, str]] | None = None,
                ) -> Clinic:
    """Runtime on the system clock and ``OutboundSync``; ``doctors`` new connected doctors
    (or ``existing_doctors`` from a generated database, connected now)."""
    settings = bench_settings(url, emulator_url, sync)
    engine = create_engine(url, pool_size=pool_size, max_overflow=16)
    runtime = build_runtime(settings, SystemClock(), engine=engine)
    attach_google(runtime)
    kc = KiviCareWriter(runtime.schema)
    if seed_site:
        with engine.begin() as conn:
            kc.site(conn, site_url=SITE_URL, timezone_string="Europe/Berlin")
            clinic_id = kc.clinic(conn, "Bench Clinic")
            patient_id = kc.user(conn, "bench-patient", "kiviCare_patient",
                                 display_name="Pat Bench")
    else:
        with engine.connect() as conn:
            clinics = runtime.schema.clinics
            users = runtime.schema.users
            assert clinics is not None and users is not None
            clinic_id = int(conn.execute(sa.select(sa.func.min(clinics.c.id))).scalar() or 0)
            patient_id = int(conn.execute(sa.select(sa.func.max(users.c.ID))).scalar() or 0)
    runtime.site_url = SITE_URL
    clinic = Clinic(runtime, engine, kc,
                    OutboundSync(runtime, runtime.google_factory, max_workers=max_workers,
                                 per_doctor=per_doctor),
                    clinic_id, patient_id)
    if existing_doctors is not None:
        clinic.doctors = list(existing_doctors)
    else:
        with engine.begin() as conn:
            for n in range(doctors):
                login = f"bench-doctor-{n}"
                doctor_id = kc.user(conn, login, "kiviCare_doctor",
                                    display_name=f"Dr. Bench {n}")
                kc.doctor_in_clinic(conn, doctor_id, clinic_id)
                service_id = kc.service(conn, "Video consultation", doctor_id=doctor_id,
                                        clinic_id=clinic_id, telemed=True)
                clinic.doctors.append((doctor_id, service_id, f"{login}@bench.test"))
    if connect:
        for doctor_id, _service, email in clinic.doctors:
            connect_doctor(runtime, engine, doctor_id, email)
    return clinic


# --- small helpers ---------------------------------------------------------------------------

def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (Linux ``/proc``); None when
    it cannot be read (no such process, not Linux)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after "pid (comm)": state is field 3, utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_mariadb_pid() -> int | None:
    """The pid of a MariaDB/MySQL server on this machine (None if there is none to see)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() in ("mariadbd", "mysqld"):
                    return int(entry)
        except OSError:
            continue
    return None


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux ``/proc``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
                break
    mariadb = ""
    with contextlib.suppress(Exception):
        eng = server_engine()
        with eng.connect() as conn:
            mariadb = str(conn.execute(sa.text("SELECT VERSION()")).scalar())
        eng.dispose()
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(mem_gb, 1),
            "python": platform.python_version(), "mariadb": mariadb,
            "platform": platform.platform()}
