"""``kc-sidecar serve``: the web app under gunicorn plus the scheduler, in one process.

One gunicorn worker (``gthread``, 8 threads) bound to ``sidecar.listen`` serves the Flask app,
with an access log on stdout from which secret-bearing URLs are scrubbed (``sidecar.access_log``);
the scheduler starts in that worker after the fork (``post_worker_init``) so there is exactly one
scheduler per replica, and replicas cooperate through database locks and leases. The runtime is
built once in the master first, so configuration and database problems are reported (exit 2 or
1) before any server starts.

SIGTERM (or Ctrl-C): gunicorn stops accepting requests, the worker's ``worker_exit`` hook stops
the scheduler and waits for the round in flight, then the server finishes. When gunicorn cannot
be imported, werkzeug's threaded server is used with the same start/stop order.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from sidecar.config import Settings

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1
THREADS = 8
GRACEFUL_TIMEOUT = 30


class Service:
    """The process's runtime, WSGI app and scheduler, built lazily (in the worker)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: Any = None
        self.scheduler: Any = None
        self.app: Any = None

    def build(self) -> Any:
        from sidecar.runtime import build_runtime
        from sidecar.scheduler import SyncScheduler
        from sidecar.web import create_app

        if self.app is None:
            self.runtime = build_runtime(self.settings)
            self.scheduler = SyncScheduler(self.runtime)
            self.app = create_app(self.runtime)
        return self.app

    def start_scheduler(self) -> None:
        self.build()
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop(wait=True)
        if self.app is not None:
            close_background_workers(self.app)
        if self.runtime is not None:
            self.runtime.engine.dispose()


def close_background_workers(app: Any, timeout: float = 5.0) -> None:
    """Stop the web app's own background work (the webhook's inbound worker), if started."""
    try:
        from sidecar.web.webhook import EXTENSION
    except ImportError:
        return
    worker = app.extensions.get(EXTENSION)
    if worker is not None:
        worker.close(timeout)


def preflight(settings: Settings) -> None:
    """Build (and discard) a runtime: ConfigError / database errors surface here, in the
    master, before a server starts."""
    from sidecar.runtime import build_runtime

    build_runtime(settings).engine.dispose()


def run(settings: Settings, args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    try:
        preflight(settings)
    except sa.exc.SQLAlchemyError as err:
        print(f"kc-sidecar serve: database problem: {type(err).__name__}: "
              f"{str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return serve_werkzeug(settings)
    return serve_gunicorn(settings)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """gunicorn's settings for ``serve``, without the hooks that run the scheduler. The access
    log (stdout) and the error log (stderr) go through ``sidecar.gunicorn_logger.GunicornLogger``,
    which scrubs invite paths and OAuth callback queries (imported only here: gunicorn
    is optional at run time)."""
    from sidecar.gunicorn_logger import LOGGER_CLASS

    return {
        "bind": settings.sidecar.listen, "workers": 1, "threads": THREADS,
        "worker_class": "gthread", "graceful_timeout": GRACEFUL_TIMEOUT,
        "timeout": 60, "keepalive": 5, "accesslog": "-", "errorlog": "-",
        "logger_class": LOGGER_CLASS,
        "loglevel": settings.sidecar.log_level.lower(), "proc_name": "kc-sidecar",
    }


def serve_gunicorn(settings: Settings) -> int:
    from gunicorn.app.base import BaseApplication

    service = Service(settings)

    class SidecarApplication(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                **gunicorn_options(settings),
                "post_worker_init": lambda worker: service.start_scheduler(),
                "worker_exit": lambda server, worker: service.stop(),
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return service.build()

    log.info("serving on %s (gunicorn, 1 worker, %s threads)", settings.sidecar.listen, THREADS)
    try:
        SidecarApplication().run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    return EXIT_OK


def serve_werkzeug(settings: Settings) -> int:
    from sidecar.access_log import make_server

    service = Service(settings)
    app = service.build()
    server = make_server(settings.sidecar.listen_host, settings.sidecar.listen_port, app,
                         threaded=True)

    def stop_all() -> None:
        service.scheduler.stop(wait=True)
        server.shutdown()

    def on_term(signum: int, frame: Any) -> None:
        threading.Thread(target=stop_all, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, on_term)
    service.start_scheduler()
    log.info("serving on %s (werkzeug, threaded)", settings.sidecar.listen)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK
