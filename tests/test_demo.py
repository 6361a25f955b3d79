"""The embedded demo: its WordPress login cookie (checked by the sidecar and by real WordPress),
the DST pick, and a first run plus a resumed run reaching Meet links for every seeded
telemedicine appointment within 10 s."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from sidecar.clock import FakeClock
from sidecar.db import create_engine
from sidecar.demo import Demo, DemoOptions
from sidecar.demo.cookie import mint_logged_in_cookie
from sidecar.demo.seed import next_dst_switch
from sidecar.kc_seed import KiviCareWriter
from sidecar.wp_auth import CookieValidator, LoggedInKeys, cookie_hash_for
from wp_schema.ddl import create_site
from wp_schema.meta import UserMeta
from wp_schema.names import TableNames
from wp_schema.reflect import SiteSchema

ROOT = Path(__file__).resolve().parent.parent
KEYS = LoggedInKeys(key="demo-test-logged-in-key", salt="demo-test-logged-in-salt")


def test_minted_cookie_passes_wordpress_validation_until_tampered_or_logged_out(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'site.db'}")
    create_site(engine, TableNames(), kivicare="v4", mapping_shape="c")
    schema = SiteSchema.load(engine, TableNames())
    with engine.begin() as conn:
        admin = KiviCareWriter(schema).user(conn, "admin", "administrator")
    clock = FakeClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    validator = CookieValidator(engine, schema, KEYS, cookie_hash_for("http://x"), clock)
    with engine.begin() as conn:
        first = mint_logged_in_cookie(conn, schema, admin, KEYS, now=clock.time())
        second = mint_logged_in_cookie(conn, schema, admin, KEYS, now=clock.time())

    for value in (first, second):  # two sessions side by side, as two browsers
        user = validator.validate(quote(value, safe=""))
        assert user is not None and user.id == admin and user.is_administrator
    login, expiration, token, mac = first.split("|")
    forged = f"{login}|{int(expiration) + 3600}|{token}|{mac}"
    assert validator.validate(quote(forged, safe="")) is None
    assert validator.validate(first[:-1] + ("0" if first[-1] != "0" else "1")) is None
    with engine.begin() as conn:  # log that browser out: its session token is gone
        sessions = UserMeta(schema).get(conn, admin, "session_tokens")
        assert len(sessions) == 2
        UserMeta(schema).set(conn, admin, "session_tokens",
                             {k: v for k, v in sessions.items()
                              if v["expiration"] and k != _verifier(token)})
    assert validator.validate(first) is None
    assert validator.validate(second) is not None
    clock.advance(2 * 86400 + 1)
    assert validator.validate(second) is None


def _verifier(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.php
def test_minted_cookie_is_accepted_by_real_wordpress(new_mysql_database: Callable[[], str]):
    from tests.php_wp import WordPressPHP, random_salts, require_php

    require_php()
    url = new_mysql_database()
    wp = WordPressPHP(url, "wp_", random_salts(), "http://clinic.test")
    try:
        admin_id = wp.install()
        engine = sa.create_engine(url)
        schema = SiteSchema.load(engine, TableNames())
        with engine.begin() as conn:
            value = mint_logged_in_cookie(conn, schema, admin_id,
                                          LoggedInKeys.from_constants(wp.salts), now=time.time())
        engine.dispose()
        assert wp.validate_cookie(quote(value, safe="")) == admin_id
    finally:
        wp.close()


def test_next_dst_switch_is_the_first_of_either_zone():
    assert next_dst_switch(datetime(2026, 11, 28, 10, tzinfo=UTC)) == (
        date(2027, 3, 14), "America/New_York")
    assert next_dst_switch(datetime(2027, 3, 20, 10, tzinfo=UTC)) == (
        date(2027, 3, 28), "Europe/Berlin")
    assert next_dst_switch(datetime(2027, 10, 20, 10, tzinfo=UTC)) == (
        date(2027, 10, 31), "Europe/Berlin")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _fetch(url: str, cookie: str | None = None) -> tuple[int, Any, str]:
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def _counts(db: Path) -> dict[str, int]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return {t: int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar() or 0)
                    for t in ("wp_users", "wp_kc_appointments", "wp_kc_services",
                              "wp_kc_appointment_google_meet_mappings")}
    finally:
        engine.dispose()


def _meet_rows(db: Path) -> dict[int, list[str]]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT appointment_id, url FROM wp_kc_appointment_google_meet_mappings")).all()
    finally:
        engine.dispose()
    out: dict[int, list[str]] = {}
    for appointment_id, url in rows:
        out.setdefault(int(appointment_id), []).append(str(url))
    return out


def test_demo_first_run_then_a_resumed_run_as_a_process(tmp_path):
    folder = tmp_path / "demo"
    out = io.StringIO()
    demo = Demo(DemoOptions(directory=folder, port=0, emulator_port=0), out)
    demo.start()
    try:
        site = demo.site
        assert demo.newly_seeded
        assert demo.all_links_seconds is not None and demo.all_links_seconds < 10
        assert demo.first_link_seconds <= demo.all_links_seconds
        banner = demo.banner()
        assert "first Meet link after" in banner and demo.login_url in banner
        assert site.dst_appointment in site.telemed_appointments

        # The login link logs the browser in as the seeded admin; the admin page shows both
        # doctors. A wrong token gets nothing.
        status, headers, _ = _fetch(demo.login_url)
        assert status == 303 and headers["Location"] == demo.base_url + "/admin"
        set_cookie = headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and set_cookie.startswith("wordpress_logged_in_")
        status, _, page = _fetch(demo.base_url + "/admin", set_cookie.split(";")[0])
        assert status == 200
        assert "Dr. Anna Weber" in page and "Dr. Ben Carter" in page
        assert _fetch(demo.base_url + "/demo-login?token=guess")[0] == 403
        assert _fetch(demo.base_url + "/admin")[0] == 401
    finally:
        demo.stop()

    db = folder / "wordpress.db"
    secrets_file = folder / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # it holds the OAuth tokens
    rows = _meet_rows(db)
    assert set(rows) == set(site.telemed_appointments)  # nothing for in-person or unconnected
    assert all(len(urls) == 1 and urls[0].startswith("https://meet.google.com/")
               for urls in rows.values())
    before, secrets_before = _counts(db), secrets_file.read_text()

    # Second run, as the user starts it: resumes the same folder, stops on Ctrl-C.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar.demo", "--dir", str(folder), "--port", "0",
         "--emulator-port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any(line.startswith("Press Ctrl-C") for line in seen):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.5))
        text = "".join(seen)
        assert "resumed" in text
        [timing] = [line for line in seen if "first Meet link after" in line]
        all_after = float(timing.split("Meet links after ")[1].split(" s")[0])
        assert all_after < 10, timing
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _counts(db) == before  # nothing seeded or mapped twice
    assert secrets_file.read_text() == secrets_before
    after = _meet_rows(db)
    assert set(after) == set(site.telemed_appointments)
    assert all(len(urls) == 1 for urls in after.values())
