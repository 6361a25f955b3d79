"""No secret in logs: the log tap's own contract, and the whole-suite verdict.

Each reliability test already fails when a line it logged holds a secret (the autouse fixture in
``conftest.py``). ``test_whole_suite_logged_no_secret`` runs in the serial stage of
``scripts/test`` and reads what every worker of the parallel stage found in *every* test's logs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from tests.reliability.secret_scan import LogTap


def test_tap_finds_emulator_tokens_and_registered_values_but_not_masks() -> None:
    tap = LogTap()
    log = logging.getLogger("sidecar.tap-test")
    log.addHandler(tap)
    log.propagate = False
    try:
        tap.remember("client-secret-value-123", "short")
        log.info("refresh with %s", "1//emu-" + "A" * 40)
        log.warning("oops", extra={"detail": "client-secret-value-123"})
        log.info("fine: Bearer ***, token=***, short")
        try:
            raise ValueError("ya29.emu-" + "b" * 30)
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(tap)
        log.propagate = True
    found = tap.findings()
    assert len(found) == 3
    assert all("<SECRET>" in f and "AAAA" not in f and "bbbb" not in f for f in found)


@pytest.mark.suite_end
@pytest.mark.skipif(os.environ.get("KCSC_SUITE_END") != "1" or
                    not os.environ.get("KCSC_SECRET_SCAN_DIR"),
                    reason="runs in the serial stage of scripts/test, after the parallel stage")
def test_whole_suite_logged_no_secret() -> None:
    reports = sorted(Path(os.environ["KCSC_SECRET_SCAN_DIR"]).glob("secret-scan-*.json"))
    assert reports, "the parallel stage left no secret-scan report"
    lines, findings = 0, []
    for path in reports:
        data = json.loads(path.read_text(encoding="utf-8"))
        lines += data["lines"]
        findings += data["findings"]
    print(json.dumps({"scenario": "secrets_in_logs", "workers": len(reports),
                      "lines_scanned": lines, "findings": len(findings)}))
    assert lines > 1000
    assert findings == [], "\n".join(findings[:20])
