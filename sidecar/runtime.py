"""The typed container every entry point builds once: settings, engine, schema, stores, clock.

``build_runtime(settings)`` wires the process-wide parts (one engine, the reflected schema, the
sidecar's state store, the WordPress cookie validator, the token signer, metrics, the per-doctor
Google client factory) so the web app, the scheduler and CLI commands share one construction
path and tests can build the same thing with a fake clock. It makes no Google call and starts no
thread. Other parts extend it through two hooks instead of new fields:

* :meth:`Runtime.add_readiness` — a named check returning ``None`` when fine or a reason string
  (the scheduler registers ``scheduler``); ``GET /readyz`` reports them;
* :attr:`Runtime.stop_channels` — called with a doctor id on disconnect, before the tokens go,
  so push channels can be stopped while the token still works (set by the inbound-sync part).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from sidecar.clock import Clock, SystemClock
from sidecar.config import Settings
from sidecar.metrics import Metrics
from sidecar.signing import NonceStore, Signer
from wp_schema.names import TableNames
from wp_schema.reflect import SiteSchema

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], "str | None"]

_KEY_SETTINGS = ("auth_key", "secure_auth_key", "logged_in_key", "nonce_key", "auth_salt",
                 "secure_auth_salt", "logged_in_salt", "nonce_salt")


@dataclass
class Runtime:
    settings: Settings
    engine: sa.Engine
    names: TableNames
    schema: SiteSchema
    clock: Clock
    metrics: Metrics
    cookies: Any  # sidecar.wp_auth.CookieValidator
    accounts: Any  # sidecar.accounts.AccountStore
    state: Any  # sidecar.state.StateStore
    signer: Signer
    nonces: NonceStore
    site_url: str
    #: ``google_factory(doctor_id)`` → a ``sidecar.google_api.CalendarClient`` for that doctor;
    #: set by ``sidecar.services.attach_google`` (``build_runtime`` calls it; tests may call it
    #: again with their own retry policy), which also fills ``google_api`` and ``credentials``.
    google_factory: Callable[[int], Any] | None = None
    google_api: Any = None  # sidecar.google_api.GoogleApi, when attached
    credentials: Any = None  # sidecar.accounts.CredentialsProvider, when attached
    stop_channels: Callable[[int], None] | None = None
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)

    @property
    def public_url(self) -> str:
        """``sidecar.public_url`` without a trailing slash: the base of every URL we generate."""
        return self.settings.sidecar.public_url.rstrip("/")

    def add_readiness(self, name: str, check: ReadinessCheck) -> None:
        self.readiness_checks[name] = check

    def readiness(self) -> dict[str, str]:
        """Failing checks as ``{name: reason}``; empty when the sidecar is ready."""
        problems: dict[str, str] = {}
        for name, check in self.readiness_checks.items():
            try:
                reason = check()
            except Exception as err:  # a crashing check is a failing check
                log.warning("readiness check %s raised %s", name, type(err).__name__)
                reason = f"check failed: {type(err).__name__}"
            if reason:
                problems[name] = reason
        return problems


def _database_check(engine: sa.Engine) -> ReadinessCheck:
    def check() -> str | None:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as err:
            return f"database unreachable ({type(err).__name__})"
        return None

    return check


def _schema_check(schema: SiteSchema) -> ReadinessCheck:
    def check() -> str | None:
        return "; ".join(schema.problems) or None

    return check


def _stored_site_url(engine: sa.Engine, schema: SiteSchema) -> str:
    options = schema.options
    if options is None:
        return ""
    with engine.connect() as conn:
        value = conn.execute(sa.select(options.c.option_value)
                             .where(options.c.option_name == "siteurl").limit(1)).scalar()
    return str(value or "")


def _cookie_validator(settings: Settings, engine: sa.Engine, schema: SiteSchema,
                      clock: Clock) -> Any:
    from sidecar import wp_auth

    constants: dict[str, Any] = dict(getattr(settings.wp_config, "constants", None) or {})
    for name in _KEY_SETTINGS:
        value = getattr(settings.wordpress, name)
        if value:
            constants[name.upper()] = value
    keys = wp_auth.LoggedInKeys.from_constants(constants)
    cookie_hash = settings.wordpress.cookie_hash
    if not cookie_hash:
        with engine.connect() as conn:
            cookie_hash = wp_auth.site_cookie_hash(conn, schema,
                                                   settings.wordpress.site_url or None)
    return wp_auth.CookieValidator(engine, schema, keys, cookie_hash, clock)


def build_runtime(settings: Settings, clock: Clock | None = None, *,
                  engine: sa.Engine | None = None, metrics: Metrics | None = None) -> Runtime:
    """Everything but threads. ``ConfigError`` when a required key is missing."""
    from sidecar import accounts, state
    from sidecar.db import create_engine
    from sidecar.services import attach_google
    from sidecar.sync import channels

    settings.require("database.url", "sidecar.secret_key")
    clock = clock or SystemClock()
    # Room for every outbound worker twice over (a worker mostly holds one connection at a
    # time), the web threads and the scheduler's own jobs: a pool smaller than the workers
    # makes SQLAlchemy open and close overflow connections on the hot path.
    engine = engine or create_engine(str(settings.database.url),
                                     pool_size=2 * settings.sync.workers + 4, max_overflow=10)
    names: TableNames = settings.database.table_names()
    schema = SiteSchema.load(engine, names)
    state_store = state.StateStore(engine, names, clock)
    state_store.migrate()
    nonces = NonceStore(names)  # its table comes from the state migrations
    site_url = (settings.wordpress.site_url or _stored_site_url(engine, schema)).rstrip("/")
    metrics = metrics or Metrics()
    account_store = accounts.AccountStore(schema, state_store)
    runtime = Runtime(
        settings=settings, engine=engine, names=names, schema=schema, clock=clock,
        metrics=metrics,
        cookies=_cookie_validator(settings, engine, schema, clock),
        accounts=account_store,
        state=state_store, signer=Signer(settings.sidecar.secret_key), nonces=nonces,
        site_url=site_url,
    )
    runtime.add_readiness("database", _database_check(engine))
    runtime.add_readiness("schema", _schema_check(schema))
    attach_google(runtime)
    channels.install(runtime)  # disconnect stops the doctor's push channels
    return runtime
