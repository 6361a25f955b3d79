"""The benchmark suite's quick mode runs end to end and produces every row of its table.

Nothing about time is asserted (CI machines vary); what a user of ``python -m bench.run``
would notice is a missing row, a crash, or a figure that is not a number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import run as bench_run

pytestmark = pytest.mark.usefixtures("mysql_server")

EXPECTED = ("booking → Meet link", "backfill", "Google calls per new meeting",
            "new-appointment poll", "upcoming-window reconcile", "webhook intake",
            "Google edit → mapping row updated", "resident memory")


def test_quick_mode_prints_every_row_and_writes_json(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert bench_run.main(["--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    measures = [row["measure"] for row in results["rows"]]
    for name in EXPECTED:
        assert sum(m.startswith(name) for m in measures) == 1, (name, measures)
        assert any(line.startswith(name) for line in printed.splitlines()), name
    lat = results["latency"]
    assert lat["linked"] == lat["bookings"] > 0
    assert math.isfinite(lat["p50_s"]) and lat["p99_s"] >= lat["p50_s"]
    edit = results["edit"]
    assert 0 < edit["p50_ms"] <= edit["p90_ms"] <= edit["max_ms"]
    bf = results["backfill"]
    assert bf["synced"] == bf["appointments"] and bf["rate_per_s"] > 0
    assert bf["baseline_rate_per_s"] > 0 and bf["ratio_to_sequential"] > 0
    calls = results["calls"]
    assert calls["synced"] == calls["meetings"] and calls["calls_per_ready_meeting"] >= 1
    poll = results["poll"]
    assert poll["explain_poll"][0]["key"] == "PRIMARY"
    assert poll["reconcile_queued"] == 0  # steady state: nothing changed, nothing queued
    mem = results["memory"]
    assert mem["appointments"] > 0 and mem["rss_final_mb"] > 0
    wh = results["webhook"]
    assert wh.get("status") == "n/a" or wh["accepted"] > 0
