"""A local Google: OAuth accounts server, Calendar v3 with Meet, push channels, fault injection.

Reached only through the real client libraries with a different base URL; see README.md.
"""

from __future__ import annotations

from sidecar.emulator.app import create_emulator_app
from sidecar.emulator.config import ClientRegistration, EmulatorConfig
from sidecar.emulator.server import RunningServer, run_in_thread, serve_forever
from sidecar.emulator.state import EmulatorState

__all__ = [
    "ClientRegistration",
    "EmulatorConfig",
    "EmulatorState",
    "RunningServer",
    "create_emulator_app",
    "run_in_thread",
    "serve_forever",
]
