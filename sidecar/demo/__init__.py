"""The embedded demo: a SQLite WordPress + KiviCare site, the Google emulator and the sidecar in
one process (``kc-sidecar demo`` / ``./scripts/demo``).

* :mod:`~sidecar.demo.keys` — the demo folder's secrets file (kept, mode 0600);
* :mod:`~sidecar.demo.seed` — the seeded clinic, seeded once per folder;
* :mod:`~sidecar.demo.cookie` — a WordPress ``logged_in`` cookie for the seeded admin;
* :mod:`~sidecar.demo.runner` — starts, connects, measures and stops everything.
"""

from __future__ import annotations

from sidecar.demo.runner import Demo, DemoOptions, run_demo

__all__ = ["Demo", "DemoOptions", "run_demo"]
