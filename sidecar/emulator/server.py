"""Serving the emulator: on a real port in a background thread (tests, demo, bench) or forever.

``run_in_thread`` also serves the sidecar's own app in tests and the demo; request lines are
logged through ``sidecar.access_log`` so invite paths and OAuth callback queries never appear.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import BaseWSGIServer

from sidecar.access_log import make_server

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """A WSGI app served on a real port by a background thread."""

    url: str
    port: int
    server: BaseWSGIServer
    thread: threading.Thread
    app: Any

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        emulator = getattr(self.app, "emulator", None)
        if emulator is not None:
            emulator.close()


def run_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve ``app`` (threaded werkzeug server) until ``.stop()``; ``port=0`` picks a free port."""
    server = make_server(host, port, app, threaded=True)
    real_port = server.server_port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"wsgi-{real_port}",
                              daemon=True)
    thread.start()
    return RunningServer(url=f"http://{host}:{real_port}", port=real_port, server=server,
                         thread=thread, app=app)


def serve_forever(host: str, port: int, config: Any) -> None:
    """The ``kc-sidecar emulator`` command: serve until interrupted."""
    from sidecar.emulator.app import create_emulator_app

    app = create_emulator_app(config)
    server = make_server(host, port, app, threaded=True)
    log.info("Google emulator listening on http://%s:%s (testing=%s)", host,
             server.server_port, config.testing)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.emulator.close()  # type: ignore[attr-defined]
