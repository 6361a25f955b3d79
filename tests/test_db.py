"""Named locks exclude each other across connections on MariaDB and across threads on SQLite."""

from __future__ import annotations

import threading

import pytest

from sidecar.db import LockTimeout, create_engine, named_lock


@pytest.fixture(params=["mariadb", "sqlite"])
def engine(request, new_mysql_database, tmp_path):
    url = new_mysql_database() if request.param == "mariadb" else f"sqlite:///{tmp_path}/site.db"
    eng = create_engine(url)
    yield eng
    eng.dispose()


def test_second_holder_times_out_while_first_holds(engine):
    entered = threading.Event()
    release = threading.Event()
    outcome: list[str] = []

    def holder():
        with named_lock(engine, "doctor-7"):
            entered.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(10)
    try:
        with named_lock(engine, "doctor-7", timeout=0.2):
            outcome.append("acquired")
    except LockTimeout:
        outcome.append("timeout")
    # A different name is independent.
    with named_lock(engine, "doctor-8", timeout=0.2):
        outcome.append("other")
    release.set()
    t.join()
    with named_lock(engine, "doctor-7", timeout=1):
        outcome.append("after-release")
    assert outcome == ["timeout", "other", "after-release"]
