"""Webhook intake: push notifications accepted per second, and how they coalesce per doctor.

``doctors`` connected doctors get real channels through
:class:`sidecar.sync.channels.ChannelManager` against the emulator (served from this process),
stored in a scratch database, and a first full sync each (later syncs are deltas). The sidecar
is then served the way production serves it: the real ``kc-sidecar serve`` in a child process
(gunicorn, ``gthread``, 1 worker, ``serve.THREADS`` threads, access log on, scheduler started
after the fork), configured through ``KCSC_*`` environment variables for the scratch database
and the emulator. Its ``ChannelCache`` reads the channels from the database. A second child
(``bench.webhook_load``) posts genuine notifications for all channels over ``threads``
keep-alive connections for ``seconds``; the headline figure is 2xx answers per second.

Coalescing: notifications accepted vs. doctor syncs (``events.list`` calls at the emulator,
whoever ran them: the webhook's ``InboundWorker`` or the scheduler's ``inbound_due`` job).
The served process's worker cannot be inspected from here, so its counters are derived:
``worker_notified`` is the ``accepted`` webhook count from its ``GET /metrics``,
``worker_coalesced`` the notifications that cost no sync of their own (notified − syncs) and
``worker_rounds`` the sync rounds seen at the emulator: bursts of ``events.list`` calls at most
``ROUND_GAP`` apart (a worker round is followed by a ``min_interval`` = 1 s pause), a burst
being cut where a doctor comes again (the scheduler's job may run between worker rounds).

For comparison (``variants``), the same load against other servers: ``werkzeug`` is the
threaded dev server inside this process with the bench's own worker (whose exact counters are
reported next to the derived ones); ``gunicorn_log_all`` is ``serve`` with an access line for
every request, accepted notifications included (``serve`` leaves those out);
``gunicorn_no_access_log`` and ``gunicorn_threads_N`` are ``serve`` with one gunicorn setting
changed. The served variants run through ``bench.serve_variant``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime
from typing import Any

from bench.emulator_proc import build_app
from bench.env import make_clinic, scratch_database
from sidecar.config import Settings, env_name
from sidecar.emulator.server import run_in_thread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEBHOOK_PATH = "/webhook/google"
ROUND_GAP = 0.5  # a longer pause between two events.list calls starts a new sync round
SETTLE_QUIET = 0.5  # seconds without a new sync and with no due flag: the syncs are over
# (a worker round takes a due flag just before its events.list call, and the flag is written
# before the doctor is queued, so "no flag and quiet" is reached only between rounds)
#: variant name -> gunicorn setting overrides for ``bench.serve_variant`` (None: in-process)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "werkzeug": None,
    "gunicorn_log_all": {"_log_all": True},
    "gunicorn_no_access_log": {"accesslog": None},
}


def available() -> str | None:
    """None when the webhook can be benchmarked, else the reason it cannot."""
    if importlib.util.find_spec("sidecar.web.webhook") is None:
        return "sidecar/web/webhook.py does not exist (inbound push not implemented)"
    return None


def run(*, doctors: int, seconds: float, threads: int,
        variants: tuple[str, ...] = ()) -> dict[str, Any]:
    """The production server's figures (gunicorn when importable), plus one dict per variant
    under its name. ``threads``: the load generator's concurrent keep-alive connections."""
    reason = available()
    if reason is not None:
        return {"status": "n/a", "reason": reason}
    for variant in variants:
        if variant not in VARIANTS and not variant.startswith("gunicorn_threads_"):
            raise ValueError(f"unknown webhook benchmark variant {variant!r}")
    from sidecar.sync import channels
    from sidecar.sync.inbound import InboundSync

    emu_app = build_app(0.0, 10**9, 0.0, 1.0, 7, 200_000)
    emu = run_in_thread(emu_app)
    google = emu_app.emulator  # type: ignore[attr-defined]
    gunicorn = importlib.util.find_spec("gunicorn") is not None
    with scratch_database() as url:
        clinic = make_clinic(url, emu.url, doctors=doctors, max_workers=4, pool_size=20)
        try:
            rt = clinic.runtime
            port = _free_port()
            base = f"http://127.0.0.1:{port}"
            manager = channels.install(rt, address=base + WEBHOOK_PATH)
            manager.run_once()
            inbound = InboundSync(rt, channels=manager)
            for doctor_id, _s, _e in clinic.doctors:
                inbound.sync_doctor(doctor_id)  # first full sync: later ones are deltas
            client_id = rt.settings.google.client_id
            headers = []
            for ch in rt.state.active_channels():
                token = google.push.channels[(client_id, ch.channel_id)].token
                headers.append({"X-Goog-Channel-ID": ch.channel_id,
                                "X-Goog-Channel-Token": token,
                                "X-Goog-Resource-ID": ch.resource_id or "",
                                "X-Goog-Resource-State": "exists"})
            settings = _served_settings(rt.settings, base, port)

            def measure(variant: str | None) -> dict[str, Any]:
                if variant == "werkzeug" or (variant is None and not gunicorn):
                    return _run_werkzeug(rt, inbound, google, headers, port, seconds, threads)
                overrides = VARIANTS.get(variant or "") or {}
                if variant is not None and variant.startswith("gunicorn_threads_"):
                    overrides = {"threads": int(variant.rsplit("_", 1)[1])}
                return _run_served(settings, overrides, rt, inbound, google, headers, base,
                                   seconds, threads)

            out = measure(None)
            out["server"] = (f"kc-sidecar serve: gunicorn gthread 1×{_serve_threads()}"
                             if gunicorn else "werkzeug threaded, gunicorn not installed")
            for variant in variants:
                if variant.startswith("gunicorn") and not gunicorn:
                    continue
                out[variant] = measure(variant)
                out[f"{variant}_rate_per_s"] = out[variant]["rate_per_s"]
            return {"doctors": doctors, "channels": len(headers), "threads": threads, **out}
        finally:
            clinic.close()
            emu.stop()


# --- the served process -----------------------------------------------------------------------

def _serve_threads() -> int:
    from sidecar.commands import serve

    return serve.THREADS


def _served_settings(settings: Settings, base: str, port: int) -> Settings:
    """The bench's settings with the sidecar listening on ``port`` of loopback, and that
    address as its public URL: a channel address must be HTTPS or loopback, else the served
    process's channel job would retire the channels (see ``ChannelManager.address_problem``)."""
    from dataclasses import replace

    return replace(settings, sidecar=replace(settings.sidecar, public_url=base,
                                             listen=f"127.0.0.1:{port}"))


def settings_env(settings: Settings) -> dict[str, str]:
    """``KCSC_<SECTION>__<KEY>`` for every setting that differs from its default."""
    out: dict[str, str] = {}
    for section in Settings.SECTION_NAMES:
        value = getattr(settings, section)
        default = type(value)()
        for key in fields(value):
            v = getattr(value, key.name)
            if v != getattr(default, key.name) and v is not None:
                out[env_name(section, key.name)] = str(v)
    return out


@contextlib.contextmanager
def _served(settings: Settings, overrides: dict[str, Any], base: str,
            logdir: str) -> Iterator[subprocess.Popen[bytes]]:
    """``kc-sidecar serve`` (or ``bench.serve_variant`` with gunicorn overrides) until SIGTERM;
    its stdout (the access log) and stderr go to files in ``logdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCSC_")}
    env.update(settings_env(settings))
    script = os.path.join(os.path.dirname(sys.executable), "kc-sidecar")
    if overrides:
        cmd = [sys.executable, "-m", "bench.serve_variant", json.dumps(overrides)]
    elif os.path.exists(script):
        cmd = [script, "serve"]
    else:
        cmd = [sys.executable, "-c", "from sidecar.cli import main; raise SystemExit(main())",
               "serve"]
    with open(os.path.join(logdir, "stdout"), "wb") as out, \
            open(os.path.join(logdir, "stderr"), "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=ROOT)
    try:
        _wait_ready(proc, base, logdir)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], base: str, logdir: str,
                timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.2)
    with open(os.path.join(logdir, "stderr"), errors="replace") as fh:
        tail = fh.read()[-2000:]
    raise RuntimeError(f"the served sidecar did not become ready (exit {proc.poll()}): {tail}")


def _run_served(settings: Settings, overrides: dict[str, Any], rt: Any, inbound: Any,
                google: Any, headers: list[dict[str, str]], base: str, seconds: float,
                threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kcsc-bench-webhook-") as logdir, \
            _served(settings, overrides, base, logdir) as proc:
        _settle(google, inbound)  # the scheduler's first runs start with the server
        google.clear_requests()
        load_avg = os.getloadavg()[0]
        cpu0 = _tree_cpu(proc.pid)
        load = _load(base, seconds, threads, headers)
        cpu = _tree_cpu(proc.pid) - cpu0
        syncs, rounds = _settle(google, inbound)
        notified = _metric(base, 'kcsc_webhook_notifications_total{outcome="accepted"}')
        access_lines = _count_lines(os.path.join(logdir, "stdout"))
    alive = len(rt.state.active_channels())
    if alive != len(headers):
        raise RuntimeError(f"the served sidecar retired channels ({alive} of {len(headers)} "
                           "left): its public URL is not a valid channel address")
    out = _figures(load, notified, syncs, rounds, cpu, load_avg)
    out["access_log_lines"] = access_lines
    return out


# --- the in-process werkzeug server ---------------------------------------------------------

def _run_werkzeug(rt: Any, inbound: Any, google: Any, headers: list[dict[str, str]],
                  port: int, seconds: float, threads: int) -> dict[str, Any]:
    from sidecar.sync.inbound import InboundWorker
    from sidecar.web import create_app
    from sidecar.web.webhook import install_worker

    app = create_app(rt)
    web = run_in_thread(app, port=port)
    worker = install_worker(app, InboundWorker(inbound, min_interval=1.0).start())
    try:
        google.clear_requests()
        load_avg = os.getloadavg()[0]
        cpu0 = time.process_time()
        load = _load(web.url, seconds, threads, headers)
        cpu = time.process_time() - cpu0
        worker.wait_idle(timeout=30)
        syncs, rounds = _settle(google, inbound)
        out = _figures(load, worker.notified, syncs, rounds, cpu, load_avg)
        out.update(exact_worker_coalesced=worker.coalesced, exact_worker_rounds=worker.rounds)
        return out
    finally:
        worker.close()
        web.stop()


# --- measuring ------------------------------------------------------------------------------

def _load(base: str, seconds: float, threads: int, headers: list[dict[str, str]]
          ) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.webhook_load", base + WEBHOOK_PATH, str(seconds),
         str(threads)], input=json.dumps(headers), capture_output=True, text=True,
        timeout=seconds + 60, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError("webhook load generator failed: " + proc.stderr[-2000:])
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _figures(load: dict[str, Any], notified: int, syncs: int, rounds: int, server_cpu: float,
             load_avg: float) -> dict[str, Any]:
    """One server's figures. CPU is a share of one core over the run: the served process and
    its children, or this whole process for the in-process server (emulator included); the
    load average (1 min) is the machine's just before the run."""
    secs = load["seconds"]
    return {
        "sent": load["sent"], "accepted": load["accepted"], "status": load["status"],
        "seconds": round(secs, 2), "rate_per_s": round(load["accepted"] / secs, 1),
        "worker_notified": notified, "worker_coalesced": notified - syncs,
        "worker_rounds": rounds, "doctor_syncs": syncs,
        "server_cpu_pct": round(100 * server_cpu / secs),
        "client_cpu_pct": round(100 * load["cpu_s"] / secs), "load_avg_1m": round(load_avg, 2),
    }


def _settle(google: Any, inbound: Any, timeout: float = 30.0) -> tuple[int, int]:
    """Wait until no doctor is due and no sync started for ``SETTLE_QUIET`` seconds; returns
    (doctor syncs, sync rounds) seen at the emulator since its log was cleared."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        calls = google.requests("calendar.events.list")
        if len(calls) != last:
            last, since = len(calls), time.monotonic()
        elif time.monotonic() - since >= SETTLE_QUIET and not inbound.due_doctors():
            break
        time.sleep(0.2)
    calls = sorted(((datetime.fromisoformat(c["time"]).timestamp(), c.get("user"))
                    for c in google.requests("calendar.events.list")), key=lambda c: c[0])
    rounds, previous, seen = 0, float("-inf"), set()
    for at, user in calls:
        if at - previous > ROUND_GAP or user in seen:
            rounds, seen = rounds + 1, set()
        seen.add(user)
        previous = at
    return len(calls), rounds


def _metric(base: str, series: str) -> int:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(series + " "):
                return int(float(line.split()[-1]))
    return 0


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its child processes (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(name) == pid or int(stat[1]) == pid:  # stat[1] is the parent's pid
            total += int(stat[11]) + int(stat[12])
    return total / tick


def _count_lines(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

