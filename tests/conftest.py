"""Shared fixtures: throw-away MariaDB databases (never mocked), fake clock.

Every test run creates its own databases named ``kcsc_t_<random>`` on the MariaDB server named by
``KCSC_TEST_MYSQL`` (default: root without password on 127.0.0.1:3306) and drops them at the end.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from sidecar.clock import FakeClock
from sidecar.db import create_engine
from sidecar.state import StateStore
from wp_schema.ddl import create_site
from wp_schema.names import TableNames
from wp_schema.reflect import SiteSchema

MYSQL_SERVER_URL = os.environ.get("KCSC_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306")


@pytest.fixture(scope="session")
def mysql_server() -> sa.Engine:
    engine = sa.create_engine(MYSQL_SERVER_URL + "/", pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as err:  # pragma: no cover - environment problem
        pytest.exit(f"MariaDB is not reachable at {MYSQL_SERVER_URL}: {err}", returncode=3)
    return engine


@pytest.fixture(scope="session")
def new_mysql_database(mysql_server: sa.Engine) -> Iterator[Callable[[], str]]:
    """A factory: each call creates an empty utf8mb4 database and returns its SQLAlchemy URL."""
    created: list[str] = []

    def make() -> str:
        name = "kcsc_t_" + secrets.token_hex(6)
        with mysql_server.begin() as conn:
            conn.execute(
                sa.text(
                    f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci"
                )
            )
        created.append(name)
        return f"{MYSQL_SERVER_URL}/{name}?charset=utf8mb4"

    yield make
    with mysql_server.begin() as conn:
        for name in created:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))


def with_kivicare_site(url: str) -> str:
    """Create the WordPress + KiviCare v4 tables (mapping shape c) in ``url``; returns it."""
    engine = create_engine(url)
    create_site(engine, TableNames(), kivicare="v4", mapping_shape="c")
    engine.dispose()
    return url


@pytest.fixture
def sync_db(new_mysql_database: Callable[[], str]) -> str:
    """A fresh database with the WordPress + KiviCare v4 tables (mapping shape c)."""
    return with_kivicare_site(new_mysql_database())


@pytest.fixture(scope="module")
def accounts_site(
    new_mysql_database: Callable[[], str],
) -> Iterator[tuple[sa.Engine, SiteSchema, StateStore]]:
    """WordPress core tables (no KiviCare) and the sidecar's own tables: enough for tokens,
    connection state and Google calls."""
    engine = create_engine(new_mysql_database())
    names = TableNames()
    create_site(engine, names, kivicare=None, mapping_shape=None)
    state = StateStore(engine, names)
    state.migrate()
    yield engine, SiteSchema.load(engine, names), state
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """``sidecar.cli.main`` configures process logging; leave the root logger as the test
    found it (modules that call ``main`` use it for every test)."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in saved_handlers]:
        root.removeHandler(handler)
        handler.close()
    for handler in saved_handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(saved_level)
