"""The emulator's Flask app factory: Google's paths on one host, control routes when testing."""

from __future__ import annotations

from flask import Flask

from sidecar.emulator.config import EmulatorConfig
from sidecar.emulator.state import EmulatorState


def create_emulator_app(config: EmulatorConfig) -> Flask:
    """A WSGI app emulating accounts.google.com, oauth2.googleapis.com and Calendar v3.

    The state is reachable as ``app.emulator`` for in-process control.
    """
    from sidecar.emulator import calendar_routes, control_routes, oauth_routes

    app = Flask(__name__, template_folder="templates", static_folder=None)
    app.emulator = EmulatorState(config)  # type: ignore[attr-defined]
    app.register_blueprint(oauth_routes.bp)
    app.register_blueprint(calendar_routes.bp)
    if config.testing:
        app.register_blueprint(control_routes.bp)
    return app
