"""Webhook intake: push notifications accepted per second, and how they coalesce per doctor.

The sidecar's web app (``sidecar.web.create_app``, served by the threaded werkzeug server in
this process; production runs gunicorn) gets real channels for ``doctors`` connected doctors
through :class:`sidecar.sync.channels.ChannelManager` against the emulator, and an
:class:`sidecar.sync.inbound.InboundWorker` running its thread (``min_interval`` 1 s). A child
process (``bench.webhook_load``) then posts genuine notifications for all those channels for
``seconds``; the figure is 2xx answers per second. Coalescing: notifications received vs.
doctor syncs the worker ran (``events.list`` calls at the emulator).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

from bench.emulator_proc import build_app
from bench.env import make_clinic, scratch_database
from sidecar.emulator.server import run_in_thread


def available() -> str | None:
    """None when the webhook can be benchmarked, else the reason it cannot."""
    if importlib.util.find_spec("sidecar.web.webhook") is None:
        return "sidecar/web/webhook.py does not exist (inbound push not implemented)"
    return None


def run(*, doctors: int, seconds: float, threads: int) -> dict[str, Any]:
    reason = available()
    if reason is not None:
        return {"status": "n/a", "reason": reason}
    from sidecar.sync import channels
    from sidecar.sync.inbound import InboundSync, InboundWorker
    from sidecar.web import create_app
    from sidecar.web.webhook import install_worker

    emu_app = build_app(0.0, 10**9, 0.0, 1.0, 7, 200_000)
    emu = run_in_thread(emu_app)
    google = emu_app.emulator  # type: ignore[attr-defined]
    with scratch_database() as url:
        clinic = make_clinic(url, emu.url, doctors=doctors, max_workers=4, pool_size=20)
        web = None
        worker = None
        try:
            rt = clinic.runtime
            app = create_app(rt)
            web = run_in_thread(app)
            manager = channels.install(rt, address=web.url + "/webhook/google")
            manager.run_once()
            inbound = InboundSync(rt, channels=manager)
            for doctor_id, _s, _e in clinic.doctors:
                inbound.sync_doctor(doctor_id)  # first full sync: later ones are deltas
            worker = install_worker(app, InboundWorker(inbound, min_interval=1.0).start())
            client_id = rt.settings.google.client_id
            headers = []
            for ch in rt.state.active_channels():
                token = google.push.channels[(client_id, ch.channel_id)].token
                headers.append({"X-Goog-Channel-ID": ch.channel_id,
                                "X-Goog-Channel-Token": token,
                                "X-Goog-Resource-ID": ch.resource_id or "",
                                "X-Goog-Resource-State": "exists"})
            google.clear_requests()
            proc = subprocess.run(
                [sys.executable, "-m", "bench.webhook_load", web.url + "/webhook/google",
                 str(seconds), str(threads)], input=json.dumps(headers), capture_output=True,
                text=True, timeout=seconds + 60,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            if proc.returncode != 0:
                raise RuntimeError("webhook load generator failed: " + proc.stderr[-2000:])
            load = json.loads(proc.stdout)
            worker.wait_idle(timeout=30)
            syncs = len(google.requests("calendar.events.list"))
            return {
                "doctors": doctors, "channels": len(headers), "threads": threads,
                "sent": load["sent"], "accepted": load["accepted"], "status": load["status"],
                "seconds": round(load["seconds"], 2),
                "rate_per_s": round(load["accepted"] / load["seconds"], 1),
                "worker_notified": worker.notified, "worker_coalesced": worker.coalesced,
                "worker_rounds": worker.rounds, "doctor_syncs": syncs,
            }
        finally:
            if worker is not None:
                worker.close()
            if web is not None:
                web.stop()
            clinic.close()
            emu.stop()
