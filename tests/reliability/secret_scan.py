"""The log tap behind the "no secret in logs" check.

A handler on the root logger keeps the text of every record the process produces (message with
its arguments, extras, exception text), *before* any redaction: the sidecar's own code must never
hand a secret to logging, whatever the redactor would later mask. The root logger runs at DEBUG
with the same floors for chatty libraries that ``sidecar.logs.configure_logging`` sets in
production, so the tap sees exactly what a DEBUG deployment would print.

Two kinds of needles:

* shapes that only the Google emulator issues (``ya29.emu-…`` access tokens, ``1//emu-…`` refresh
  tokens, ``4/emu-…`` authorization codes): a leak of any token from any test in the session;
* exact values registered by the reliability tests (client secrets, WordPress salts and cookies,
  ``secret_key``, tokens read back from the database).

Under ``pytest -n`` each worker has its own tap; when ``KCSC_SECRET_SCAN_DIR`` is set, each
worker writes its findings there at session end and the serial stage of ``scripts/test`` fails
if any file reports one (``test_secrets.py::test_whole_suite_logged_no_secret``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path

from sidecar.logs import QUIET_LOGGERS, extra_keys, redact

EMULATOR_SHAPES = re.compile(r"(?:ya29\.emu-|1//emu-|4/emu-)[A-Za-z0-9_\-]{16,}")
MIN_VALUE_LENGTH = 8
ACCESS_LOGGERS = frozenset({"werkzeug"})


class LogTap(logging.Handler):
    """Keeps every record's raw text; ``findings()`` lists the ones that hold a secret."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.lines: list[tuple[str, str]] = []
        self.values: set[str] = set()
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string: keep both parts
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        for key in extra_keys(record):
            text += f" {key}={record.__dict__.get(key)!r}"
        if record.name in ACCESS_LOGGERS:
            # Access-log lines: both servers redact them before any handler sees them
            # (sidecar.access_log, sidecar.gunicorn_logger), so judge what that lets through.
            text = redact(text)
        with self._guard:
            self.lines.append((record.name, text))

    def remember(self, *values: object) -> None:
        """Register exact secret values (short or empty ones are ignored)."""
        with self._guard:
            for value in values:
                if isinstance(value, str) and len(value) >= MIN_VALUE_LENGTH:
                    self.values.add(value)

    def mark(self) -> int:
        return len(self.lines)

    def findings(self, since: int = 0, extra_text: list[tuple[str, str]] | None = None
                 ) -> list[str]:
        """``logger: excerpt`` for each line (from index ``since``) holding a secret; the
        excerpt shows where, with the secret itself cut out."""
        with self._guard:
            lines = self.lines[since:] + list(extra_text or [])
            values = sorted(self.values, key=len, reverse=True)
        found = []
        value_re = re.compile("|".join(re.escape(v) for v in values)) if values else None
        for name, text in lines:
            hit = EMULATOR_SHAPES.search(text) or (value_re.search(text) if value_re else None)
            if hit:
                start = max(0, hit.start() - 60)
                found.append(f"{name}: …{text[start:hit.start()]}<SECRET>"
                             f"{text[hit.end():hit.end() + 40]}…")
        return found


_TAP: LogTap | None = None


def install() -> LogTap:
    """Attach the process's tap to the root logger at DEBUG (idempotent)."""
    global _TAP
    if _TAP is None:
        _TAP = LogTap()
        root = logging.getLogger()
        root.addHandler(_TAP)
        root.setLevel(logging.DEBUG)
        for name, floor in QUIET_LOGGERS.items():
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET or logger.level < floor:
                logger.setLevel(floor)
    return _TAP


def tap() -> LogTap:
    return install()


def write_report(directory: str, worker: str) -> Path | None:
    """Write this process's findings (if any line was seen) for the final check."""
    if _TAP is None:
        return None
    path = Path(directory) / f"secret-scan-{worker}-{os.getpid()}.json"
    path.write_text(json.dumps({"lines": len(_TAP.lines), "findings": _TAP.findings()}),
                    encoding="utf-8")
    return path
