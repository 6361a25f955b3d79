"""Access logs of the HTTP servers that run the sidecar, without the secrets some URLs carry.

Two kinds of request URL hold a secret: an invite link's path (``/invite/<signed token>``, which
lets whoever holds it connect a doctor's calendar until it is used) and the OAuth callback's query
(``code`` and ``state``). Every server that prints request lines must scrub them, with the same
rules as the rest of the process (``sidecar.logs``):

* werkzeug (tests, the demo, the emulator, ``serve`` without gunicorn): :func:`make_server` uses
  :class:`RedactingRequestHandler`, which scrubs each line before werkzeug's logger sees it, so no
  handler anywhere (werkzeug adds its own when logging is not configured) gets the raw line;
* gunicorn (``serve``): ``sidecar.gunicorn_logger.GunicornLogger`` (a module of its own, since
  gunicorn is only imported when it runs).
"""

from __future__ import annotations

from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler
from werkzeug.serving import make_server as _werkzeug_make_server

from sidecar.logs import redact


class RedactingRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler with every log line (requests and errors) scrubbed."""

    def log(self, type: str, message: str, *args: Any) -> None:
        try:
            text = message % args if args else message
        except (TypeError, ValueError):  # a line werkzeug did not format as expected
            text = f"{message} {args!r}"
        super().log(type, "%s", redact(text))


def make_server(host: str, port: int, app: Any, *, threaded: bool = True) -> BaseWSGIServer:
    """werkzeug's ``make_server`` with :class:`RedactingRequestHandler`."""
    return _werkzeug_make_server(host, port, app, threaded=threaded,
                                 request_handler=RedactingRequestHandler)
