"""A whole clinic for web tests: real WordPress (PHP) on MariaDB, the Google emulator and the
sidecar's Flask app, both served over real HTTP on free ports.

``clinic_factory`` builds one per test module (WordPress install, users and cookies minted by
WordPress itself — the PHP runs are batched, so a module costs a handful of ``php`` processes).
The sidecar's public URL carries the path prefix ``/kc-sidecar`` and the server does not strip it,
so every test also exercises prefix handling. Browsers are ``requests.Session`` objects.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest
import requests
import sqlalchemy as sa

from sidecar.clock import FakeClock
from sidecar.config import (
    DatabaseSettings,
    GoogleSettings,
    SidecarSettings,
    WordPressSettings,
)
from sidecar.config import Settings as SidecarConfig
from sidecar.emulator.app import create_emulator_app
from sidecar.emulator.config import EmulatorConfig
from sidecar.emulator.server import RunningServer, run_in_thread
from sidecar.runtime import Runtime, build_runtime
from sidecar.web import create_app
from tests.php_wp import WordPressPHP, random_salts, require_php
from wp_schema.ddl import create_site
from wp_schema.names import TableNames
from wp_schema.reflect import SiteSchema

SITE_URL = "http://clinic.test"
CLIENT_ID = "clinic-client.apps.googleusercontent.com"
CLIENT_SECRET = "emulator-client-secret"
SECRET_KEY = "web-tests-secret-key-0123456789"
PREFIX = "/kc-sidecar"

USERS = [
    ("doc_one", "pw-doc-one", "kiviCare_doctor"),
    ("doc_two", "pw-doc-two", "kiviCare_doctor"),
    ("doc_three", "pw-doc-three", "kiviCare_doctor"),
    ("clinicboss", "pw-boss", "kiviCare_clinic_admin"),
    ("pat", "pw-pat", "kiviCare_patient"),
]


class LateApp:
    """A WSGI app whose target is set after the server has its port (the app needs the URL)."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


@dataclass
class Clinic:
    wp: WordPressPHP
    engine: sa.Engine
    ids: dict[str, int]
    cookies: dict[str, str]  # login → a logged_in cookie value minted by WordPress
    cookie_name: str
    clock: FakeClock
    runtime: Runtime
    sidecar: RunningServer
    emulator: RunningServer
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """The sidecar's public URL (with its path prefix)."""
        return self.runtime.public_url

    def url(self, path: str) -> str:
        return self.base + path

    def browser(self, login: str | None = None, cookie: str | None = None) -> requests.Session:
        """A browser, logged in to WordPress as ``login`` (or carrying ``cookie``)."""
        session = requests.Session()
        value = cookie if cookie is not None else (self.cookies[login] if login else None)
        if value is not None:
            session.cookies.set(self.cookie_name, value, domain="127.0.0.1", path="/")
        return session

    def emulator_requests(self, api_method: str | None = None) -> list[dict[str, Any]]:
        return self.emulator.app.emulator.requests(api_method)

    def meta(self, user_id: int, key: str) -> Any:
        """What PHP's get_user_meta($id, $key, true) returns now."""
        return self.wp.get_user_meta(user_id, key)

    def usermeta_rows(self, user_id: int) -> dict[str, str]:
        """The user's meta straight from the table (cheap; no PHP)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT meta_key, meta_value FROM wp_usermeta WHERE user_id = :u "
                "ORDER BY umeta_id"), {"u": user_id}).all()
        return {k: v for k, v in reversed(rows)}

    def add_stale_cookies(self, login: str = "doc_one") -> None:
        """``extra["expired"]`` and ``extra["logged_out"]``: two of ``login``'s cookies minted in
        one PHP run, one already expired and one whose session WordPress has logged out."""
        user = self.ids[login]
        past = int(self.clock.time()) - 60
        (_, expired), (_, logged_out) = self.wp.mint_login_cookies(
            [(user, past, False), (user, None, False)])
        self.wp.logout(user, unquote_plus(logged_out).split("|")[2])
        self.extra.update(expired=expired, logged_out=logged_out)

    def connect(self, session: requests.Session, *, doctor: int | None = None,
                email: str = "doctor@gmail.test", path: str | None = None) -> requests.Response:
        """Run the whole OAuth round trip: /connect → emulator approve → callback."""
        start = path or ("/connect" + (f"?doctor={doctor}" if doctor else ""))
        first = session.get(self.url(start), allow_redirects=False)
        assert first.status_code == 302, first.text
        callback = approve_at_emulator(first.headers["Location"], email)
        return session.get(callback, allow_redirects=False)


def approve_at_emulator(authorization_url: str, email: str) -> str:
    """The emulator's non-interactive consent (``emulator_auto_approve``): the callback URL."""
    answer = requests.get(authorization_url + "&emulator_auto_approve=" + email,
                          allow_redirects=False, timeout=10)
    assert answer.status_code in (302, 303), answer.text
    return answer.headers["Location"]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def now_clock() -> FakeClock:
    """WordPress cookies carry real timestamps, so the fake clock starts at real now."""
    return FakeClock(datetime.fromtimestamp(int(time.time()), UTC))


def build_settings(db_url: str, public_url: str, emulator_url: str,
                   salts: dict[str, str]) -> SidecarConfig:
    return SidecarConfig(
        database=DatabaseSettings(url=db_url),
        wordpress=WordPressSettings(
            site_url=SITE_URL, **{name.lower(): value for name, value in salts.items()}),
        sidecar=SidecarSettings(public_url=public_url, secret_key=SECRET_KEY),
        google=GoogleSettings(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
            auth_uri=emulator_url + "/o/oauth2/v2/auth", token_uri=emulator_url + "/token",
            revoke_uri=emulator_url + "/revoke", api_endpoint=emulator_url + "/",
            request_timeout=10.0),
    )


@pytest.fixture(scope="module")
def clinic_factory(new_mysql_database: Callable[[], str]) -> Iterator[Callable[[], Clinic]]:
    """``make()`` → a fresh :class:`Clinic`; everything is torn down at module end."""
    made: list[Clinic] = []

    def make() -> Clinic:
        require_php()
        url = new_mysql_database()
        salts = random_salts()
        wp = WordPressPHP(url, "wp_", salts, SITE_URL)
        engine = sa.create_engine(url)
        admin_id = wp.install()
        names = TableNames("wp_")
        create_site(engine, names, core=False, kivicare="v4", mapping_shape="c")
        ids = dict(zip([u[0] for u in USERS], wp.create_users(USERS), strict=True))
        ids["admin"] = admin_id
        schema = SiteSchema.load(engine, names)
        with engine.begin() as conn:
            clinic_id = conn.execute(sa.insert(schema.clinics).values(
                name="A", clinic_admin_id=ids["clinicboss"])).inserted_primary_key[0]
            conn.execute(sa.insert(schema.doctor_clinic_mappings), [
                {"doctor_id": ids["doc_one"], "clinic_id": clinic_id},
                {"doctor_id": ids["doc_two"], "clinic_id": clinic_id},
            ])
        logins = ["admin", "doc_one", "doc_two", "doc_three", "clinicboss", "pat"]
        minted = wp.mint_login_cookies([(ids[login], None, False) for login in logins])
        cookie_name = minted[0][0]

        late = LateApp()
        sidecar = run_in_thread(late)
        public_url = sidecar.url + PREFIX
        emulator = run_in_thread(create_emulator_app(EmulatorConfig(
            clients={CLIENT_ID: (CLIENT_SECRET, [public_url + "/oauth/callback"])},
            testing=True, push_mode="manual")))
        clock = now_clock()
        runtime = build_runtime(build_settings(url, public_url, emulator.url, salts), clock)
        late.app = create_app(runtime)
        clinic = Clinic(wp=wp, engine=engine, ids=ids,
                        cookies={login: value for login, (_, value) in zip(logins, minted,
                                                                            strict=True)},
                        cookie_name=cookie_name, clock=clock, runtime=runtime, sidecar=sidecar,
                        emulator=emulator)
        made.append(clinic)
        return clinic

    yield make
    for clinic in made:
        clinic.sidecar.stop()
        clinic.emulator.stop()
        clinic.runtime.engine.dispose()
        clinic.engine.dispose()
        clinic.wp.close()


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)
