"""Runs the demo: emulator + sidecar (web app and scheduler) on a seeded SQLite site.

Start-up order: demo folder and secrets → database (seeded once) → the sidecar's HTTP server
(its port fixes ``public_url``) → the Google emulator, which knows the demo's OAuth client →
runtime, web app and scheduler → the connected doctor goes through the real connect flow (an
invite link, the emulator's consent, the sidecar's callback) → the time until the first and
until every seeded telemedicine appointment has its Meet link is measured and printed.

The emulator keeps its data in memory, so on a second run Google starts empty: the sidecar's
memory of the old one (mapping rows, sync token, channels) is dropped, the doctor is connected
again and every meeting is created again through the normal path ("event missing in Google" →
next event id) — nothing is seeded or mapped twice.

``GET /demo-login?token=…`` (token random per run, printed once, compared in constant time)
mints a WordPress ``logged_in`` cookie for the seeded administrator and redirects to ``/admin``.
"""

from __future__ import annotations

import errno
import hmac
import http.cookies
import logging
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from sidecar.demo import keys
from sidecar.demo.cookie import mint_logged_in_cookie
from sidecar.demo.seed import DemoSite, ensure_site

log = logging.getLogger(__name__)

LOGIN_PATH = "/demo-login"
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class DemoOptions:
    directory: Path = Path("demo-data")
    host: str = "127.0.0.1"
    port: int = 8090
    emulator_port: int = 8091
    conference_delay: float = 1.0


class _Dispatcher:
    """A WSGI app whose target is set once the sidecar is built (the port comes first)."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"starting\n"]
        return self.app(environ, start_response)


class _DemoLogin:
    """``/demo-login?token=…`` → cookie for the seeded admin, 303 to ``/admin``."""

    def __init__(self, app: Any, demo: Demo) -> None:
        self.app = app
        self.demo = demo

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != LOGIN_PATH:
            return self.app(environ, start_response)
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        given = (query.get("token") or [""])[0]
        if environ.get("REQUEST_METHOD") != "GET" or not hmac.compare_digest(
                given.encode(), self.demo.login_token.encode()):
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"This demo login link is not valid; use the one the demo printed.\n"]
        value = urllib.parse.quote(self.demo.mint_admin_cookie(), safe="")
        cookie = (f"{self.demo.runtime.cookies.cookie_name}={value}; Path=/; HttpOnly; "
                  "SameSite=Lax")
        start_response("303 See Other", [("Location", self.demo.base_url + "/admin"),
                                         ("Set-Cookie", cookie), ("Cache-Control", "no-store"),
                                         ("Content-Length", "0")])
        return [b""]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _serve(app: Any, host: str, port: int) -> tuple[Any, str | None]:
    """Serve on ``port``; if that port is taken, on a free one (and say so)."""
    from sidecar.emulator import run_in_thread

    try:
        return run_in_thread(app, host, port), None
    except OSError as err:
        if err.errno != errno.EADDRINUSE or port == 0:
            raise
        return run_in_thread(app, host, 0), f"port {port} is in use"


class Demo:
    def __init__(self, options: DemoOptions | None = None, out: TextIO | None = None) -> None:
        self.options = options or DemoOptions()
        self.out = out or sys.stdout
        self.login_token = secrets.token_urlsafe(32)
        self.runtime: Any = None
        self.scheduler: Any = None
        self.site: DemoSite | None = None
        self.newly_seeded = False
        self.base_url = ""
        self.emulator_url = ""
        self.first_link_seconds: float | None = None
        self.all_links_seconds: float | None = None
        self._servers: list[Any] = []
        self._flask: Any = None
        self._t0 = 0.0

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        self._t0 = time.monotonic()
        started_at = datetime.now(UTC).replace(microsecond=0)
        opts = self.options
        directory = opts.directory.resolve()
        secret = keys.load_or_create(directory)
        db_path = directory / "wordpress.db"
        # The database holds the doctor's OAuth tokens: owner-only, like the secrets file.
        os.close(os.open(db_path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(db_path, 0o600)
        try:
            self._start(secret, db_path, started_at)
        except BaseException:
            self.stop()
            raise

    def _start(self, secret: keys.DemoSecrets, db_path: Path, started_at: datetime) -> None:
        from sidecar.config import (
            DatabaseSettings,
            GoogleSettings,
            Settings,
            SidecarSettings,
            SyncSettings,
            WordPressSettings,
        )
        from sidecar.db import create_engine
        from sidecar.emulator import EmulatorConfig, create_emulator_app
        from sidecar.runtime import build_runtime
        from sidecar.scheduler import SyncScheduler
        from sidecar.web import create_app
        from wp_schema.names import TableNames

        opts = self.options
        url = f"sqlite:///{db_path}"
        engine = create_engine(url)
        site, self.newly_seeded = ensure_site(engine, TableNames(), started_at)
        self.site = site

        dispatcher = _Dispatcher()
        web, note = _serve(dispatcher, opts.host, opts.port)
        self._servers.append(web)
        if note:
            self._say(f"note: {note}; the sidecar uses port {web.port}")
        self.base_url = web.url
        emulator_app = create_emulator_app(EmulatorConfig(
            clients={secret.client_id: (secret.client_secret, [self.base_url + "/*"])},
            testing=True, conference_delay_seconds=opts.conference_delay,
            seed=secrets.randbits(31)))
        emu, note = _serve(emulator_app, opts.host, opts.emulator_port)
        self._servers.append(emu)
        if note:
            self._say(f"note: {note}; the Google emulator uses port {emu.port}")
        self.emulator_url = emu.url

        today = started_at.date()
        upcoming = max(60, (datetime.fromisoformat(site.dst_day).date() - today).days + 7)
        settings = Settings(
            database=DatabaseSettings(url=url),
            wordpress=WordPressSettings(logged_in_key=secret.logged_in_key,
                                        logged_in_salt=secret.logged_in_salt),
            sidecar=SidecarSettings(public_url=self.base_url, listen=f"{opts.host}:{web.port}",
                                    secret_key=secret.secret_key),
            google=GoogleSettings(
                client_id=secret.client_id, client_secret=secret.client_secret,
                auth_uri=emu.url + "/o/oauth2/v2/auth", token_uri=emu.url + "/token",
                revoke_uri=emu.url + "/revoke", api_endpoint=emu.url + "/",
                request_timeout=10.0),
            sync=SyncSettings(poll_seconds=1, reconcile_seconds=10, settle_seconds=0,
                              upcoming_days=upcoming),
        )
        self.runtime = runtime = build_runtime(settings, engine=engine)
        self.scheduler = SyncScheduler(runtime)
        self._flask = create_app(runtime)
        dispatcher.app = _DemoLogin(self._flask, self)

        if not self.newly_seeded:
            self._forget_old_google(site.connected_doctor_id)
        self.connect_doctor(site.connected_doctor_id, site.connected_email)
        self.scheduler.start()
        self._wait_for_links(site, started_at)

    def connect_doctor(self, doctor_id: int, email: str) -> None:
        """The doctor's connect flow over HTTP: invite link → emulator consent (approved as
        ``email``) → the sidecar's OAuth callback."""
        from sidecar.web.connect_flow import create_invite

        opener = urllib.request.build_opener(_NoRedirect)
        invite = create_invite(self.runtime, doctor_id, 600)
        to_google = self._redirect(opener, invite)
        flow_cookie = http.cookies.SimpleCookie(to_google.headers.get("Set-Cookie", ""))
        cookie = "; ".join(f"{k}={m.value}" for k, m in flow_cookie.items())
        approve = to_google.headers["Location"] + "&" + urllib.parse.urlencode(
            {"emulator_auto_approve": email})
        callback = self._redirect(opener, approve).headers["Location"]
        if not callback.startswith(self.base_url + "/"):
            raise RuntimeError("the emulator redirected somewhere unexpected")
        request = urllib.request.Request(callback, headers={"Cookie": cookie})  # noqa: S310
        with opener.open(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"connecting the demo doctor failed ({response.status})")
        with self.runtime.engine.connect() as conn:
            status = self.runtime.accounts.connection_status(conn, doctor_id)
        if status != "connected":
            raise RuntimeError("connecting the demo doctor failed")

    @staticmethod
    def _redirect(opener: Any, url: str) -> Any:
        try:
            opener.open(url, timeout=10)
        except urllib.error.HTTPError as err:
            if err.code in (302, 303):
                return err
            raise
        raise RuntimeError(f"expected a redirect from {url.split('?')[0]}")

    def _forget_old_google(self, doctor_id: int) -> None:
        """A resumed run talks to a fresh, empty emulator: what the sidecar knew about the old
        one (mapping rows pointing at its events, the calendar's sync token, push channels) is
        dropped, and the doctor's meetings become due, so they are created again."""
        rt = self.runtime
        state = rt.state
        now = rt.clock.now()
        items = state.list_items(doctor_id=doctor_id, limit=100000)
        mappings = rt.schema.meet_mappings
        with rt.engine.begin() as conn:
            ids = [i.appointment_id for i in items]
            for offset in range(0, len(ids), 500):
                conn.execute(sa.delete(mappings).where(
                    mappings.c.appointment_id.in_(ids[offset:offset + 500])))
            state.upsert_doctor(doctor_id, conn=conn, sync_token=None)
            for channel in state.active_channels(doctor_id=doctor_id, conn=conn):
                state.mark_channel_stopped(channel.channel_id, now=now, conn=conn)
            for item in items:
                if item.state in ("synced", "creating", "awaiting_conference"):
                    state.requeue(item.appointment_id, now=now, conn=conn)

    def _wait_for_links(self, site: DemoSite, started_at: datetime) -> None:
        wanted = set(site.telemed_appointments)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            have = self.linked_since(wanted, started_at)
            if have and self.first_link_seconds is None:
                self.first_link_seconds = time.monotonic() - self._t0
            if have >= wanted:
                self.all_links_seconds = time.monotonic() - self._t0
                return
            time.sleep(0.05)

    def linked_since(self, appointment_ids: set[int], since: datetime) -> set[int]:
        """Those appointments that were synced since ``since`` and have a Meet link row."""
        rt = self.runtime
        items = rt.state.tables.items
        mappings = rt.schema.meet_mappings
        with rt.engine.connect() as conn:
            rows = conn.execute(
                sa.select(items.c.appointment_id)
                .join(mappings, mappings.c.appointment_id == items.c.appointment_id)
                .where(items.c.appointment_id.in_(sorted(appointment_ids)),
                       items.c.state == "synced",
                       items.c.updated_at >= since.replace(tzinfo=None),
                       mappings.c.url.like("https://meet.google.com/%"))
            ).scalars().all()
        return {int(r) for r in rows}

    def mint_admin_cookie(self) -> str:
        from sidecar.wp_auth import LoggedInKeys

        assert self.site is not None
        keys_ = LoggedInKeys.from_settings(self.runtime.settings.wordpress)
        with self.runtime.engine.begin() as conn:
            return mint_logged_in_cookie(conn, self.runtime.schema, self.site.admin_id, keys_,
                                         now=self.runtime.clock.time())

    @property
    def login_url(self) -> str:
        return f"{self.base_url}{LOGIN_PATH}?token={self.login_token}"

    # ------------------------------------------------------------------ report and stop
    def banner(self) -> str:
        site = self.site
        assert site is not None
        directory = self.options.directory
        lines = [
            f"kc-sidecar demo — {'new demo site' if self.newly_seeded else 'resumed'} in "
            f"{directory}/ (SQLite: {directory}/wordpress.db)",
            f"  sidecar:         {self.base_url}   (health: {self.base_url}/healthz, "
            f"metrics: {self.base_url}/metrics)",
            f"  Google emulator: {self.emulator_url}",
            f"  {site.connected_doctor_name} connected as {site.connected_email} through the "
            "emulator's consent flow",
        ]
        n = len(site.telemed_appointments)
        if self.all_links_seconds is not None:
            lines.append(f"  first Meet link after {self.first_link_seconds:.1f} s; all {n} "
                         f"telemedicine appointments of {site.connected_doctor_name} have Meet "
                         f"links after {self.all_links_seconds:.1f} s")
        else:
            first = (f"first Meet link after {self.first_link_seconds:.1f} s"
                     if self.first_link_seconds is not None else "no Meet link yet")
            lines.append(f"  {first}; not all {n} appointments had links within "
                         f"{READY_TIMEOUT:.0f} s (see kc-sidecar status)")
        lines += [
            f"  one of them is on {site.dst_day}, the day {site.dst_zone} switches "
            "daylight-saving time",
            f"  {site.other_doctor_name} is not connected: his appointments wait until he "
            "connects (admin page → Connect)",
            "",
            "Admin page, logged in as the seeded WordPress administrator:",
            f"  {self.login_url}",
            "",
            "Press Ctrl-C to stop; run again to resume with the same data.",
        ]
        return "\n".join(lines)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop(wait=True)
            self.scheduler = None
        if self._flask is not None:
            from sidecar.commands.serve import close_background_workers

            close_background_workers(self._flask)
            self._flask = None
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()
        if self.runtime is not None:
            self.runtime.engine.dispose()


def run_demo(options: DemoOptions, out: TextIO | None = None, *, verbose: bool = False) -> int:
    """The ``demo`` command: start, print the banner, wait for Ctrl-C or SIGTERM, stop."""
    from sidecar import logs

    logs.configure_logging("INFO" if verbose else "WARNING", "text")
    # werkzeug logs every request at INFO on its own logger; the demo keeps the console quiet
    logging.getLogger("werkzeug").setLevel(logging.INFO if verbose else logging.WARNING)
    out = out or sys.stdout
    demo = Demo(options, out)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        demo.start()
        print(demo.banner(), file=out, flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping…", file=out, flush=True)
        demo.stop()
        signal.signal(signal.SIGTERM, previous)
    print("stopped.", file=out, flush=True)
    return 0
