"""Reliability and security suite: markers, counts, the log tap and shared fixtures.

Counts are small by default so the whole suite stays fast; ``KCSC_RELIABILITY_FULL=1`` (or
``scripts/reliability-full``) runs the full ones. Tests that stop MariaDB carry the ``dbrestart``
marker and run only in the serial stage of ``scripts/test`` (``KCSC_ALLOW_DB_RESTART=1``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from sidecar.clock import FakeClock
from sidecar.config import SyncSettings
from tests.reliability import secret_scan
from tests.sync.conftest import SyncWorld, make_world

FULL = os.environ.get("KCSC_RELIABILITY_FULL") == "1"


def count(default: int, full: int) -> int:
    """``full`` under KCSC_RELIABILITY_FULL=1, else ``default``; KCSC_RELIABILITY_SCALE
    (a float) scales the default for local experiments."""
    if FULL:
        return full
    return max(1, int(default * float(os.environ.get("KCSC_RELIABILITY_SCALE", "1"))))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "dbrestart: stops and restarts the shared MariaDB; runs only in the serial "
        "stage of scripts/test (KCSC_ALLOW_DB_RESTART=1)")
    config.addinivalue_line(
        "markers", "suite_end: checks made after the parallel stage of scripts/test")
    secret_scan.install()


def pytest_sessionfinish(session: pytest.Session) -> None:
    directory = os.environ.get("KCSC_SECRET_SCAN_DIR")
    if directory and os.path.isdir(directory):
        worker = getattr(session.config, "workerinput", {}).get("workerid", "main")
        secret_scan.write_report(directory, worker)


@pytest.fixture(autouse=True)
def _no_secret_logged_by_this_test() -> Iterator[secret_scan.LogTap]:
    """Every reliability test: no line logged while it ran holds a secret."""
    tap = secret_scan.tap()
    start = tap.mark()
    yield tap
    found = tap.findings(since=start)
    assert not found, "secrets in log lines:\n" + "\n".join(found[:10])


@pytest.fixture
def log_tap(_no_secret_logged_by_this_test: secret_scan.LogTap) -> secret_scan.LogTap:
    return _no_secret_logged_by_this_test


def remember_world_secrets(world: SyncWorld, tap: secret_scan.LogTap) -> None:
    """Client secret, secret key and every token the database holds for connected doctors."""
    import sqlalchemy as sa

    settings = world.runtime.settings
    tap.remember(settings.google.client_secret, settings.sidecar.secret_key)
    um = world.runtime.schema.usermeta
    with world.engine.connect() as conn:
        for (value,) in conn.execute(sa.select(um.c.meta_value).where(
                um.c.meta_key.like("%google%"))):
            tap.remember(*_token_values(value))


def _token_values(meta_value: str | None) -> list[str]:
    import json

    from wp_schema.phpvalue import maybe_unserialize

    found: list[str] = []
    value = maybe_unserialize(meta_value or "")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if isinstance(value, dict):
        for key in ("access_token", "refresh_token"):
            if isinstance(value.get(key), str):
                found.append(value[key])
    return found


@pytest.fixture
def world_factory(sync_db: str, log_tap: secret_scan.LogTap
                  ) -> Iterator[Callable[..., SyncWorld]]:
    """``make(clock=None, sync=None, **emulator_kwargs)`` → a SyncWorld on this test's database
    (one per test); torn down after the test, its secrets registered with the log tap."""
    opened: list[tuple[Iterator[SyncWorld], SyncWorld]] = []

    def make(clock: object | None = None, sync: SyncSettings | None = None,
             **emulator_kwargs: object) -> SyncWorld:
        gen = make_world(sync_db, clock or FakeClock(),  # type: ignore[arg-type]
                         sync=sync or SyncSettings(settle_seconds=0),
                         emulator_kwargs=emulator_kwargs)
        world = next(gen)
        opened.append((gen, world))
        return world

    yield make
    for gen, world in opened:
        remember_world_secrets(world, log_tap)
        gen.close()
