"""Process logging: one configuration call, JSON or text lines, and a redaction layer.

Owns how log records leave the process. ``configure_logging`` installs a single handler on the
root logger whose records all pass through a ``SecretRedactor`` first, in either format:

* values of secret-ish ``extra`` keys (``token``, ``client_secret``, ``cookie``, ...) become
  ``***``;
* message text, arguments, extras, exception text and stack text are scrubbed of Bearer tokens,
  Google access / refresh tokens and client secrets, WordPress auth cookies and OAuth query or
  JSON parameters;
* the sidecar's secret-bearing URLs: invite link paths (``/invite/***``) and the OAuth
  callback's query (``/oauth/callback?***``), which servers print in access logs;
* every live secret the application registered with ``register_secret`` (client secret,
  WordPress salts, ``secret_key``) is replaced wherever it appears, also URL-encoded.

Libraries that log request URLs or headers (googleapiclient's discovery and request dumps,
google-auth transports, httplib2, urllib3) are held at WARNING whatever level is chosen, so their
debug output never reaches a handler; the redactor still scrubs what they log at WARNING.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Literal
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 8

#: ``extra`` keys whose values are never printed.
SECRET_KEYS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "secret",
        "secret_key",
        "cookie",
        "cookies",
        "password",
        "passwd",
        "code",
        "code_verifier",
        "authorization",
        "state",
        "api_key",
        "salt",
    }
)
_SECRET_KEY_SUFFIXES = ("_token", "_secret", "_password", "_cookie", "_salt", "_secret_key")

#: Loggers held at WARNING or above whatever level the process runs at: they print request
#: URLs, headers or bodies (googleapiclient.model's request dump prints the Authorization
#: header at INFO), or are too chatty for a service that runs a job every few seconds.
QUIET_LOGGERS: Mapping[str, int] = {
    "googleapiclient.discovery_cache": logging.WARNING,
    "googleapiclient.discovery": logging.WARNING,
    "googleapiclient.model": logging.WARNING,
    "googleapiclient.http": logging.WARNING,
    "google_auth_httplib2": logging.WARNING,
    "google.auth": logging.WARNING,
    "google.oauth2": logging.WARNING,
    "httplib2": logging.WARNING,
    "urllib3": logging.WARNING,
    "apscheduler": logging.WARNING,
}

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRS = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)

_KV_KEYS = (
    r"access_token|refresh_token|id_token|client_secret|code_verifier|code|token|state"
    r"|password|passwd|secret_key|api_key"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values.
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + MASK),
    (re.compile(r"(?i)\b(basic)\s+[A-Za-z0-9+/]{8,}=*"), r"\1 " + MASK),
    # Header lines: "Authorization: ...", "Cookie: ...", "Set-Cookie: ...".
    (
        re.compile(r"(?im)\b((?:set-)?cookie|authorization)(\s*+:\s*+)(?!\*\*\*)[^\r\n]+"),
        r"\1\2" + MASK,
    ),
    # Google credentials by shape.
    (re.compile(r"ya29\.[0-9A-Za-z\-_.]+"), MASK),
    (re.compile(r"(?<![0-9A-Za-z.])1//[0-9A-Za-z\-_]{8,}"), MASK),
    (re.compile(r"GOCSPX-[0-9A-Za-z\-_]+"), MASK),
    # WordPress auth cookies: name=value, 'name': 'value', and bare values
    # (user|expiration|token|hmac, raw or URL-encoded).
    (
        re.compile(r"""(wordpress_(?:logged_in_|sec_)?\w*['"]?\s*[=:]\s*['"]?)[^;\s,'"]+"""),
        r"\1" + MASK,
    ),
    (
        re.compile(
            r"[^\s|;=,'\"]+(?:\||%7[Cc])\d{9,}(?:\||%7[Cc])[A-Za-z0-9]{20,}"
            r"(?:\||%7[Cc])[0-9a-f]{64}"
        ),
        MASK,
    ),
    # The sidecar's own URLs that carry secrets: an invite link's path (a signed token that
    # lets its holder connect a doctor) and the whole query of the OAuth callback (``code``,
    # ``state`` and whatever else came back), also URL-encoded inside another URL.
    (re.compile(r"((?:/|%2[Ff])invite(?:/|%2[Ff]))(?!\*\*\*)[^\s?#&;,'\"/]+"), r"\1" + MASK),
    (
        re.compile(r"((?:/|%2[Ff])oauth(?:/|%2[Ff])callback(?:\?|%3[Ff]))(?!\*\*\*)[^\s#'\"]+"),
        r"\1" + MASK,
    ),
    # OAuth parameters in URLs, form bodies and key=value text.
    (re.compile(rf"(?<![\w-])({_KV_KEYS})=[^&\s#;,'\"]+"), r"\1=" + MASK),
    # The same keys (and headers) in JSON or Python reprs, when the value is a string.
    (
        re.compile(
            rf"""(['"](?:{_KV_KEYS}|authorization|cookie)['"]\s*:\s*)(['"])(?:(?!\2).)*\2""", re.I
        ),
        r"\1\2" + MASK + r"\2",
    ),
)


def is_secret_key(key: str) -> bool:
    """True when an ``extra`` key names a value that must never be printed."""
    k = key.lower()
    return k in SECRET_KEYS or k.endswith(_SECRET_KEY_SUFFIXES)


class SecretRedactor(logging.Filter):
    """Scrubs secrets from text and log records; usable as a handler filter.

    ``register_secret`` adds a live secret (thread-safe); ``redact`` scrubs one string;
    ``filter`` rewrites a record in place (message rendered with its arguments, extras, exception
    and stack text) and always keeps it. Redacting twice gives the same result as once.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._secret_re: re.Pattern[str] | None = None
        for value in secrets:
            self.register_secret(value)

    def register_secret(self, value: str | bytes | None) -> bool:
        """Mask ``value`` (and its URL-encoded forms) wherever it appears from now on.

        Values shorter than ``MIN_SECRET_LENGTH`` characters are ignored (returns False) so that
        a trivial setting cannot turn ordinary words into ``***``.
        """
        if value is None:
            return False
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        value = value.strip("\r\n")
        if len(value) < MIN_SECRET_LENGTH:
            return False
        forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
        with self._lock:
            known = self._secrets | forms
            if known != self._secrets:
                ordered = sorted(known, key=len, reverse=True)
                self._secret_re = re.compile("|".join(re.escape(s) for s in ordered))
                self._secrets = known
        return True

    def forget_secrets(self) -> None:
        """Drop every registered secret (for a process that reloads its configuration)."""
        with self._lock:
            self._secrets = frozenset()
            self._secret_re = None

    def redact(self, text: str) -> str:
        """``text`` with every registered secret and every known secret shape replaced."""
        secret_re = self._secret_re
        if secret_re is not None:
            text = secret_re.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact_value(self, key: str, value: Any) -> Any:
        """An ``extra`` value made safe to print: masked under a secret key, scrubbed
        otherwise; containers are walked; other objects become their scrubbed ``str``."""
        if is_secret_key(key) and value not in (None, ""):
            return MASK
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {str(k): self.redact_value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact_value("", v) for v in value]
        return self.redact(str(value))

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_kcsc_redacted_by", None) is self:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not leak its arguments raw
            message = f"{record.msg} (log arguments did not match the format)"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key in extra_keys(record):
            record.__dict__[key] = self.redact_value(key, record.__dict__[key])
        record._kcsc_redacted_by = self
        return True


def extra_keys(record: logging.LogRecord) -> list[str]:
    """Names of the fields that came from ``extra=`` (in insertion order)."""
    return [k for k in record.__dict__ if k not in _RECORD_ATTRS and not k.startswith("_")]


def _utc_iso(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extras, exc_type/exc."""

    _BASE = ("ts", "level", "logger", "msg", "exc_type", "exc", "stack")

    def __init__(self, redactor: SecretRedactor) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        self._redactor.filter(record)
        out: dict[str, Any] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in extra_keys(record):
            out[f"extra.{key}" if key in self._BASE else key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        # ensure_ascii keeps the line one line whatever the content; default=str for odd extras
        # (already scrubbed strings by then).
        return json.dumps(out, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """``2024-05-01T09:00:00.000Z INFO    sidecar.sync: message key=value ...`` for people."""

    def __init__(self, redactor: SecretRedactor) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._redactor = redactor

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        self._redactor.filter(record)
        line = super().format(record)
        extras = " ".join(f"{k}={record.__dict__[k]}" for k in extra_keys(record))
        if not extras:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head} {extras}{sep}{tail}"


#: The process-wide redactor used by ``configure_logging`` and the module functions below.
REDACTOR = SecretRedactor()


def register_secret(value: str | bytes | None) -> bool:
    """Register a live secret with the process-wide redactor (see ``SecretRedactor``)."""
    return REDACTOR.register_secret(value)


def redact(text: str) -> str:
    """Scrub ``text`` with the process-wide redactor (for error pages and CLI output too)."""
    return REDACTOR.redact(text)


def parse_level(level: str | int) -> int:
    """A logging level from a name (any case) or a number; ValueError names the choices."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    name = str(level).strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    return logging.getLevelNamesMapping()[name]


def configure_logging(
    level: str | int = "INFO",
    fmt: Literal["json", "text"] = "json",
    stream: IO[str] | None = None,
    *,
    redactor: SecretRedactor | None = None,
) -> logging.Handler:
    """Send every log record of the process to ``stream`` (default stderr), redacted.

    Replaces the handler an earlier call installed (so calling it twice is safe), sets the root
    level, holds the ``QUIET_LOGGERS`` at their floor and routes ``warnings`` into logging.
    Returns the installed handler.
    """
    numeric = parse_level(level)
    if fmt not in ("json", "text"):
        raise ValueError(f"log format {fmt!r} is not one of json, text")
    redactor = REDACTOR if redactor is None else redactor
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(redactor)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    handler._kcsc_handler = True  # type: ignore[attr-defined]

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_kcsc_handler", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, numeric))
    logging.captureWarnings(True)
    return handler
