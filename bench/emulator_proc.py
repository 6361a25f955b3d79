"""The Google emulator in its own process, for benchmarks (``python -m bench.emulator_proc``).

Google is remote: in production its work costs the sidecar no CPU. Serving the emulator from a
separate process keeps its request handling off the sidecar's interpreter lock, so timings
measure the sidecar, not the emulator. It prints its base URL on the first line of stdout and
serves until stdin closes (the parent died or is done).

Bench-only shim (documented in bench/RESULTS.md): ``--pending-fraction`` makes that share of new
Meet conferences stay pending for ``--pending-seconds`` while the others are ready at once; the
emulator itself only knows one delay for every conference. ``GET /_bench/pending`` lists the
event ids whose conference was made pending. Without pending conferences the per-request tick
(a scan of every stored event) is skipped: it has nothing to resolve, and its cost grows with
the number of events, which real Google's does not.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
from typing import Any

from flask import jsonify

from sidecar.emulator import EmulatorConfig, create_emulator_app
from sidecar.emulator.server import run_in_thread

CLIENT_ID = "bench.apps.googleusercontent.com"
CLIENT_SECRET = "bench-client-secret"
REDIRECT = "http://clinic.bench/kc-sidecar/oauth/callback"


def build_app(latency: float, quota: int, pending_fraction: float, pending_seconds: float,
              seed: int, log_limit: int) -> Any:
    config = EmulatorConfig(
        clients={CLIENT_ID: (CLIENT_SECRET, [REDIRECT])}, testing=True, push_mode="manual",
        conference_delay_seconds=pending_seconds if pending_fraction > 0 else 0,
        latency_seconds=latency, per_user_quota_per_minute=quota, seed=seed,
        request_log_limit=log_limit)
    app = create_emulator_app(config)
    state = app.emulator  # type: ignore[attr-defined]
    store = state.calendar
    pending_ids: list[str] = []
    if pending_fraction > 0:
        rng = random.Random(seed)
        original = store._apply_conference

        def apply_conference(stored: Any, resource: dict[str, Any], body: dict[str, Any],
                             version: int, *, replace: bool) -> None:
            original(stored, resource, body, version, replace=replace)
            conf = resource.get("_new_conference")
            if conf is None:
                return
            if rng.random() < pending_fraction:
                pending_ids.append(str(resource.get("id") or body.get("id") or ""))
            else:
                store._resolve(resource, conf)

        store._apply_conference = apply_conference

    if pending_fraction <= 0:
        # Every conference is ready at creation, so the per-request tick (a scan of every
        # stored event for due conferences) has nothing to do; skipping it keeps the
        # emulator's cost per call flat as events pile up (a backfill stores 10,000+).
        state.tick = lambda: None

    @app.get("/_bench/pending")
    def pending() -> Any:
        with state.lock:
            return jsonify(sorted(pending_ids))

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--quota", type=int, default=600)
    p.add_argument("--pending-fraction", type=float, default=0.0)
    p.add_argument("--pending-seconds", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--log-limit", type=int, default=200_000)
    args = p.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = build_app(args.latency, args.quota, args.pending_fraction, args.pending_seconds,
                    args.seed, args.log_limit)
    server = run_in_thread(app)
    print(server.url, flush=True)
    done = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
