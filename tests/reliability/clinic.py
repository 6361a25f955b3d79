"""Helpers shared by the reliability scenarios: a clinic's worth of bookings, the environment a
sidecar subprocess is configured with, and a subprocess handle."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from typing import IO, Any

from tests.sync.conftest import SITE_URL, SyncWorld

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Bookings:
    doctors: list[tuple[int, str]] = field(default_factory=list)  # (doctor id, e-mail)
    qualifying: list[int] = field(default_factory=list)
    not_qualifying: list[int] = field(default_factory=list)
    by_doctor: dict[int, list[int]] = field(default_factory=dict)


def book_clinic(world: SyncWorld, appointments: int, doctors: int, *, start_day: date,
                cancelled_every: int = 10, plain_doctor: bool = True,
                description: str = "") -> Bookings:
    """``appointments`` telemedicine bookings spread over ``doctors`` connected doctors and the
    next weeks (every ``cancelled_every``-th one cancelled), plus a few at a doctor without a
    telemedicine service: the non-qualifying ones must get nothing."""
    out = Bookings()
    services = []
    for _ in range(doctors):
        doctor_id, service_id, email = world.doctor()
        out.doctors.append((doctor_id, email))
        services.append((doctor_id, service_id))
        out.by_doctor[doctor_id] = []
    with world.engine.begin() as conn:
        for i in range(appointments):
            doctor_id, service_id = services[i % doctors]
            cancelled = cancelled_every and i % cancelled_every == cancelled_every - 1
            booking = world.kc.book(
                conn, doctor_id=doctor_id, patient_id=world.patient_id,
                clinic_id=world.clinic_id, service_ids=[service_id],
                day=start_day + timedelta(days=i % 40), start=time(8 + i % 10, (i % 4) * 15),
                status=0 if cancelled else 1, now=world.clock.now(), description=description)
            (out.not_qualifying if cancelled else out.qualifying).append(booking.id)
            if not cancelled:
                out.by_doctor[doctor_id].append(booking.id)
    if plain_doctor:
        plain, plain_service, _ = world.doctor(telemed=False)
        for i in range(3):
            booking = world.book(plain, plain_service, start_day + timedelta(days=i))
            out.not_qualifying.append(booking.id)
    return out


def sidecar_env(world: SyncWorld, **extra: str) -> dict[str, str]:
    """The ``KCSC_*`` environment of a sidecar process sharing this world's DB and emulator."""
    s = world.runtime.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCSC_")}
    env.update({
        "KCSC_DATABASE__URL": str(s.database.url),
        "KCSC_SIDECAR__PUBLIC_URL": s.sidecar.public_url,
        "KCSC_SIDECAR__SECRET_KEY": s.sidecar.secret_key,
        "KCSC_GOOGLE__CLIENT_ID": s.google.client_id,
        "KCSC_GOOGLE__CLIENT_SECRET": s.google.client_secret,
        "KCSC_GOOGLE__AUTH_URI": s.google.auth_uri,
        "KCSC_GOOGLE__TOKEN_URI": s.google.token_uri,
        "KCSC_GOOGLE__REVOKE_URI": s.google.revoke_uri,
        "KCSC_GOOGLE__API_ENDPOINT": s.google.api_endpoint,
        "KCSC_GOOGLE__REQUEST_TIMEOUT": "5",
        "KCSC_WORDPRESS__SITE_URL": SITE_URL,
        "KCSC_SYNC__SETTLE_SECONDS": "0",
        "PYTHONPATH": str(REPO),
    })
    env.update(extra)
    return env


class Worker:
    """``python -m tests.reliability.runner`` with its stderr kept in a temporary file."""

    def __init__(self, env: dict[str, str]) -> None:
        self.log: IO[Any] = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.runner"], cwd=REPO, env=env,
            stdout=subprocess.DEVNULL, stderr=self.log)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> bool:
        """SIGKILL; True when the process was still running (the kill landed)."""
        landed = self.alive()
        self.proc.kill()
        self.proc.wait(timeout=10)
        return landed

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return text


def report(scenario: str, **figures: Any) -> None:
    """Print a scenario's figures (``-s`` shows them) and append them as one JSON line to
    ``$KCSC_RELIABILITY_REPORT`` when set (``scripts/reliability-full`` collects them)."""
    import json

    line = json.dumps({"scenario": scenario, **figures}, default=str)
    print(line)
    target = os.environ.get("KCSC_RELIABILITY_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
