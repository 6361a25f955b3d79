"""A clinic for sync tests: KiviCare v4 on a throw-away MariaDB database, the sidecar runtime
with a fake clock, and the Google emulator over real HTTP."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, time
from typing import Any

import pytest
import sqlalchemy as sa

from sidecar.clock import FakeClock
from sidecar.config import (
    DatabaseSettings,
    GoogleSettings,
    Settings,
    SidecarSettings,
    SyncSettings,
)
from sidecar.db import create_engine
from sidecar.emulator import EmulatorConfig, create_emulator_app, run_in_thread
from sidecar.emulator.testing import grant
from sidecar.google_api import RetryPolicy
from sidecar.kc_seed import Booking, KiviCareWriter
from sidecar.runtime import Runtime, build_runtime
from sidecar.services import attach_google
from sidecar.sync.outbound import OutboundSync
from tests.conftest import with_kivicare_site

CLIENT_ID = "sync-tests.apps.googleusercontent.com"
CLIENT_SECRET = "sync-tests-client-secret"
PUBLIC_URL = "http://clinic.test/kc-sidecar"
SITE_URL = "http://clinic.test"

_logins = itertools.count(1)


@dataclass
class SyncWorld:
    runtime: Runtime
    engine: sa.Engine
    clock: FakeClock
    google: Any  # EmulatorState
    kc: KiviCareWriter
    outbound: OutboundSync
    clinic_id: int
    patient_id: int

    def connect(self, doctor_id: int, email: str) -> None:
        token = grant(self.runtime.settings, email, timeout=10)
        with self.engine.begin() as conn:
            self.runtime.accounts.store_connection(conn, doctor_id, token, self.clock.now(),
                                                   google_email=email)

    def doctor(self, *, connected: bool = True, timezone: str | None = None,
               telemed: bool = True) -> tuple[int, int, str]:
        """A doctor in the clinic with one service; returns (doctor id, service id, email)."""
        n = next(_logins)
        email = f"doctor{n}@example.com"
        with self.engine.begin() as conn:
            doctor_id = self.kc.user(conn, f"doctor{n}", "kiviCare_doctor",
                                     display_name=f"Dr. Number {n}", timezone=timezone)
            self.kc.doctor_in_clinic(conn, doctor_id, self.clinic_id)
            service_id = self.kc.service(conn, "Video consultation" if telemed else "Check-up",
                                         doctor_id=doctor_id, clinic_id=self.clinic_id,
                                         telemed=telemed)
        if connected:
            self.connect(doctor_id, email)
        return doctor_id, service_id, email

    def book(self, doctor_id: int, service_id: int, day: date = date(2026, 12, 1),
             start: time = time(10, 0), **kwargs: Any) -> Booking:
        with self.engine.begin() as conn:
            return self.kc.book(conn, doctor_id=doctor_id, patient_id=self.patient_id,
                                clinic_id=self.clinic_id, service_ids=[service_id], day=day,
                                start=start, now=self.clock.now(), **kwargs)

    def mapping(self, appointment_id: int) -> list[dict[str, Any]]:
        m = self.runtime.schema.meet_mappings
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(
                sa.select(m).where(m.c.appointment_id == appointment_id).order_by(m.c.id)
            ).mappings()]

    def events(self, email: str) -> list[dict[str, Any]]:
        """Every event in the doctor's primary calendar, cancelled ones included."""
        return [e for cal in self.google.dump()["calendars"]
                if cal["owner"] == email for e in cal["events"]]

    def calls(self, method: str) -> list[dict[str, Any]]:
        return self.google.requests("calendar." + method)

    def settle(self, rounds: int = 12, step: float = 1.0) -> None:
        """Run sync cycles, moving the fake clock, until nothing is due."""
        for _ in range(rounds):
            self.outbound.run_once()
            self.clock.advance(step)


def make_world(url: str, clock: FakeClock, *, sync: SyncSettings | None = None,
               emulator_kwargs: dict[str, Any] | None = None) -> Iterator[SyncWorld]:
    app = create_emulator_app(EmulatorConfig(
        clients={CLIENT_ID: (CLIENT_SECRET, [PUBLIC_URL + "/oauth/callback"])},
        testing=True, clock=clock, push_mode="manual",
        **({"conference_delay_seconds": 0} | (emulator_kwargs or {}))))
    server = run_in_thread(app)
    settings = Settings(
        database=DatabaseSettings(url=url),
        google=GoogleSettings(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
            auth_uri=server.url + "/o/oauth2/v2/auth", token_uri=server.url + "/token",
            revoke_uri=server.url + "/revoke", api_endpoint=server.url + "/",
            request_timeout=5.0),
        sidecar=SidecarSettings(public_url=PUBLIC_URL, secret_key="sync-tests-secret-key-123"),
        sync=sync or SyncSettings(settle_seconds=0),
    )
    engine = create_engine(url)
    runtime = build_runtime(settings, clock, engine=engine)
    attach_google(runtime, retry=RetryPolicy(max_attempts=2, sleep=lambda s: None))
    kc = KiviCareWriter(runtime.schema)
    with engine.begin() as conn:
        kc.site(conn, site_url=SITE_URL, timezone_string="Europe/Berlin")
        clinic_id = kc.clinic(conn, "Harbour Clinic")
        patient_id = kc.user(conn, f"patient{next(_logins)}", "kiviCare_patient",
                             display_name="Pat O'Brien")
    runtime.site_url = SITE_URL
    outbound = OutboundSync(runtime, runtime.google_factory, max_workers=4)
    outbound.scan_new()  # initialise the cursor at the current end of history
    try:
        yield SyncWorld(runtime, engine, clock, app.emulator, kc, outbound, clinic_id,
                        patient_id)
    finally:
        server.stop()
        engine.dispose()


@pytest.fixture
def world(sync_db: str, clock: FakeClock) -> Iterator[SyncWorld]:
    yield from make_world(sync_db, clock)


# =============================================================================================
# Inbound sync: the same clinic with its sidecar web app served over HTTP, so the emulator
# delivers real push notifications to POST /webhook/google. One per test module (building a
# clinic costs seconds); tests keep apart by using doctors of their own.
# =============================================================================================


@dataclass
class PushWorld:
    world: SyncWorld
    web: Any  # sidecar.emulator.server.RunningServer serving the sidecar's Flask app
    app: Any
    channels: Any  # sidecar.sync.channels.ChannelManager (also runtime.stop_channels)
    inbound: Any  # sidecar.sync.inbound.InboundSync
    worker: Any  # sidecar.sync.inbound.InboundWorker installed in the app (not started)

    @property
    def webhook_url(self) -> str:
        return self.web.url + "/webhook/google"

    def deliver(self) -> list[dict[str, Any]]:
        """Deliver every queued push notification over HTTP; the deliveries made."""
        before = len(self.world.google.push.deliveries)
        self.world.google.deliver_pending()
        return self.world.google.push.deliveries[before:]

    def new_worker(self, *, start: bool = False, min_interval: float = 1.0) -> Any:
        """A fresh worker for the app's webhook (the previous one is closed)."""
        from sidecar.sync.inbound import InboundWorker
        from sidecar.web.webhook import install_worker

        self.worker.close()
        worker = InboundWorker(self.inbound, min_interval=min_interval)
        self.worker = install_worker(self.app, worker.start() if start else worker)
        return self.worker

    def with_policy(self, **sync_values: Any) -> Any:
        """Run with other ``[sync]`` settings; returns an InboundSync that reads them. The
        caller restores with :meth:`restore_settings`."""
        import dataclasses

        from sidecar.sync.inbound import InboundSync

        rt = self.world.runtime
        self._saved_settings = getattr(self, "_saved_settings", None) or rt.settings
        rt.settings = dataclasses.replace(
            rt.settings, sync=dataclasses.replace(rt.settings.sync, **sync_values))
        return InboundSync(rt, channels=self.channels)

    def restore_settings(self) -> None:
        saved = getattr(self, "_saved_settings", None)
        if saved is not None:
            self.world.runtime.settings = saved
            self._saved_settings = None


def make_push_world(url: str, clock: FakeClock) -> Iterator[PushWorld]:
    from sidecar.sync import channels
    from sidecar.sync.inbound import InboundSync, InboundWorker
    from sidecar.web import create_app
    from sidecar.web.webhook import install_worker

    worlds = make_world(url, clock)
    world = next(worlds)
    app = create_app(world.runtime)
    web = run_in_thread(app)
    try:
        manager = channels.install(world.runtime, address=web.url + "/webhook/google")
        inbound = InboundSync(world.runtime, channels=manager)
        worker = install_worker(app, InboundWorker(inbound))
        push = PushWorld(world, web, app, manager, inbound, worker)
        yield push
        push.worker.close()
        push.restore_settings()
    finally:
        web.stop()
        worlds.close()


@pytest.fixture(scope="module")
def push(new_mysql_database: Callable[[], str]) -> Iterator[PushWorld]:
    yield from make_push_world(with_kivicare_site(new_mysql_database()), FakeClock())
