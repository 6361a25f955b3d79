"""gunicorn's logger for ``serve``: access and error logs without secret-bearing URLs.

gunicorn prints the request line, path, query, referer and any header or environ value its
access-log format names, and the request URI when a request fails or cannot be parsed. Invite
paths and the OAuth callback's query carry secrets (see ``sidecar.access_log``), so both
gunicorn loggers get ``sidecar.logs``' redactor as a filter: it scrubs each finished line.
(Scrubbing every atom gunicorn collects as well, ~50 strings per request whether the format
uses them or not, took half the worker's CPU when every request was logged.) Accepted push
notifications are not access-logged (see ``QUIET_SUFFIXES``). Set by
``sidecar.commands.serve`` as ``logger_class``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger

from sidecar.logs import REDACTOR

#: the dotted path gunicorn's ``logger_class`` setting takes
LOGGER_CLASS = "sidecar.gunicorn_logger.GunicornLogger"


class GunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with redacting error and access logs."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.addFilter(REDACTOR)  # no-op when already there

    def access(self, resp: Any, req: Any, environ: dict[str, Any],
               request_time: timedelta) -> None:
        if _quiet(environ, resp):
            return
        super().access(resp, req, environ, request_time)


#: accepted Google push notifications get no access line: Google may send thousands a minute,
#: the line cost two thirds of the webhook's intake (bench: 669/s with it, ~1,900/s without),
#: and ``kcsc_webhook_notifications_total{outcome}`` counts them. Rejected ones (4xx/5xx) are
#: logged as usual.
QUIET_SUFFIXES = ("/webhook/google",)


def _quiet(environ: dict[str, Any], resp: Any) -> bool:
    status = getattr(resp, "status_code", None)
    return (environ.get("REQUEST_METHOD") == "POST" and isinstance(status, int) and status < 400
            and str(environ.get("PATH_INFO", "")).endswith(QUIET_SUFFIXES))
