"""Every benchmark from one command: ``python -m bench.run [--quick] [--json out.json]``.

Prints a table (measure, figure, target, met) and writes the raw results as JSON. ``--quick``
runs each benchmark once at a tiny scale (for CI; it asserts nothing about time). Full mode
reports medians over ``--runs`` runs (backfill and memory: ``--heavy-runs``).

Needs MariaDB (``KC_BENCH_MYSQL``, default root on 127.0.0.1:3306); the big database for the
poll/reconcile rows is generated once and reused (see ``bench.gen_db``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import b_backfill, b_calls, b_edit, b_latency, b_memory, b_poll, b_webhook
from bench.env import machine
from bench.gen_db import ensure_big_database

FULL: dict[str, dict[str, Any]] = {
    "latency": {"rate": 50.0, "seconds": 20.0, "latency": 0.3, "doctors": 50, "poll": 0.5,
                "workers": 32},
    "backfill": {"appointments": 10_000, "doctors": 100, "latency": 0.2, "quota": 600,
                 "workers": 100, "per_doctor": 3, "processes": 1, "baseline_sample": 25},
    "calls": {"meetings": 300, "doctors": 20, "pending_fraction": 0.3, "pending_seconds": 1.0,
              "latency": 0.0},
    "big_db": {"total": 1_000_000, "upcoming": 100_000, "db_name": "kcsc_bench_big"},
    "poll": {"polls": 200, "booked_polls": 20, "reconciles": 4},
    "memory": {"total": 100_000, "rounds": 10, "doctors": 100, "workers": 32},
    "webhook": {"doctors": 20, "seconds": 10.0, "threads": 8,
                "variants": ("gunicorn_log_all", "werkzeug")},
    "edit": {"doctors": 10, "edits": 50},
}
QUICK: dict[str, dict[str, Any]] = {
    "latency": {"rate": 10.0, "seconds": 2.0, "latency": 0.3, "doctors": 5, "poll": 0.25,
                "workers": 8},
    "backfill": {"appointments": 60, "doctors": 10, "latency": 0.2, "quota": 600,
                 "workers": 10, "per_doctor": 2, "processes": 2, "baseline_sample": 3},
    "calls": {"meetings": 20, "doctors": 4, "pending_fraction": 0.3, "pending_seconds": 1.0,
              "latency": 0.0},
    "big_db": {"total": 5_000, "upcoming": 500, "db_name": "kcsc_bench_quick"},
    "poll": {"polls": 20, "booked_polls": 3, "reconciles": 2},
    "memory": {"total": 200, "rounds": 2, "doctors": 5, "workers": 8},
    "webhook": {"doctors": 3, "seconds": 1.0, "threads": 4,
                "variants": ("gunicorn_log_all", "werkzeug")},
    "edit": {"doctors": 2, "edits": 3},
}


@dataclass
class Row:
    measure: str
    figure: str
    target: str
    met: bool | None  # None: not applicable / not measured


def _median_runs(fn: Callable[[], dict[str, Any]], runs: int, keys: list[str]
                 ) -> dict[str, Any]:
    results = [fn() for _ in range(runs)]
    out = dict(results[-1])
    for key in keys:
        values = [r[key] for r in results if isinstance(r.get(key), int | float)]
        if values:
            out[key] = round(statistics.median(values), 3)
            out[key + "_runs"] = values
    return out


def run_all(quick: bool, runs: int, heavy_runs: int, only: set[str] | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    scale = QUICK if quick else FULL
    if quick:
        runs = heavy_runs = 1
    results: dict[str, Any] = {"mode": "quick" if quick else "full", "machine": machine(),
                               "scale": scale}

    def want(name: str) -> bool:
        return only is None or name in only

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        log(f"[bench] {name} ...")
        t = time.perf_counter()
        out = fn()
        log(f"[bench] {name} done in {time.perf_counter() - t:.1f}s")
        return out

    if want("latency"):
        results["latency"] = timed("latency", lambda: _median_runs(
            lambda: b_latency.run(**scale["latency"]), runs, ["p50_s", "p90_s", "p99_s"]))
    if want("backfill"):
        results["backfill"] = timed("backfill", lambda: _median_runs(
            lambda: b_backfill.run(**scale["backfill"]), heavy_runs,
            ["seconds", "rate_per_s", "ratio_to_ideal", "ratio_to_sequential",
             "baseline_rate_per_s"]))
    if want("calls"):
        results["calls"] = timed("calls", lambda: _median_runs(
            lambda: b_calls.run(**scale["calls"]), runs,
            ["calls_per_meeting", "calls_per_ready_meeting", "calls_per_pending_meeting"]))
    if want("poll"):
        big = scale["big_db"]

        def poll() -> dict[str, Any]:
            url, gen_s = ensure_big_database(big["total"], big["upcoming"],
                                             db_name=big["db_name"],
                                             log=lambda m: log("[gen_db]" + m))
            out = _median_runs(lambda: b_poll.run(url, **scale["poll"]), runs,
                               ["poll_empty_ms_median", "poll_one_new_ms_median",
                                "reconcile_s_median", "reconcile_full_s",
                                "reconcile_after_restart_s"])
            out["generation_s"] = None if gen_s is None else round(gen_s, 1)
            return out
        results["poll"] = timed("poll+reconcile", poll)
    if want("webhook"):
        results["webhook"] = timed("webhook", lambda: _median_runs(
            lambda: b_webhook.run(**scale["webhook"]), runs,
            ["rate_per_s", "server_cpu_pct", "client_cpu_pct", "load_avg_1m",
             *(f"{v}_rate_per_s" for v in scale["webhook"]["variants"])]))
    if want("edit"):
        results["edit"] = timed("edit", lambda: _median_runs(
            lambda: b_edit.run(**scale["edit"]), runs, ["p50_ms", "p90_ms", "max_ms"]))
    if want("memory"):
        results["memory"] = timed("memory", lambda: _median_runs(
            lambda: b_memory.run_isolated(**scale["memory"]), heavy_runs,
            ["rss_final_mb", "growth_after_warmup_mb"]))
    results["rows"] = [r.__dict__ for r in rows(results)]
    return results


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}{unit}" if abs(value) < 100 else f"{value:,.0f}{unit}"
    return f"{value}{unit}"


def rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    lat = r.get("latency")
    if lat:
        out.append(Row(
            f"booking → Meet link ({lat['bookings']} bookings at {lat['rate_per_s']:g}/s, "
            f"emulator {lat['emulator_latency_s']:g}s/call, poll {lat['poll_s']:g}s)",
            f"p50 {_fmt(lat['p50_s'], ' s')}, p99 {_fmt(lat['p99_s'], ' s')} "
            f"({lat['linked']}/{lat['bookings']} linked)",
            "p50 ≤ 1.0 s, p99 ≤ 2.0 s",
            lat["p50_s"] <= 1.0 and lat["p99_s"] <= 2.0 and lat["linked"] == lat["bookings"]))
    bf = r.get("backfill")
    if bf:
        out.append(Row(
            f"backfill {bf['appointments']:,} telemed appts / {bf['doctors']} doctors "
            f"(emulator {bf['latency_s']:g}s/call, quota {bf['quota_per_min']}/min/user)",
            f"{_fmt(bf['rate_per_s'], '/s')} in {_fmt(bf['seconds'], ' s')}; "
            f"{_fmt(bf['ratio_to_ideal'])} × quota-bound ideal ({_fmt(bf['ideal_s'], ' s')}); "
            f"{_fmt(bf['ratio_to_sequential'])} × sequential "
            f"({_fmt(bf['baseline_rate_per_s'], '/s')}); CPU ms/meeting "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in (bf.get("cpu_ms_per_meeting") or {}).items())
            + f" → {bf.get('cores')} cores sustain ≤ {_fmt(bf.get('cpu_bound_rate_per_s'), '/s')}"
            f" ({bf.get('processes', 1)} sidecar process(es))",
            "≥ 0.9 × quota-bound ideal",
            bf["ratio_to_ideal"] is not None and bf["ratio_to_ideal"] >= 0.9))
    ca = r.get("calls")
    if ca:
        ok = (ca["calls_per_ready_meeting"] is not None and ca["calls_per_ready_meeting"] <= 1.05
              and ca["calls_per_meeting"] is not None and ca["calls_per_meeting"] <= 2.5)
        out.append(Row(
            f"Google calls per new meeting ({ca['meetings']} meetings, "
            f"{ca['pending_conferences']} conferences pending 1 s)",
            f"{_fmt(ca['calls_per_ready_meeting'])} ready, "
            f"{_fmt(ca['calls_per_pending_meeting'])} pending, "
            f"{_fmt(ca['calls_per_meeting'])} overall",
            "≤ 1.05 non-pending, ≤ 2.5 overall", ok))
    po = r.get("poll")
    if po:
        key = (po["explain_poll"][0].get("key") if po.get("explain_poll") else None)
        out.append(Row(
            f"new-appointment poll ({po['appointments']:,} appts, {po['upcoming']:,} upcoming)",
            f"{_fmt(po['poll_empty_ms_median'], ' ms')} empty, "
            f"{_fmt(po['poll_one_new_ms_median'], ' ms')} with 1 new; index {key}",
            "≤ 20 ms median, index-backed",
            po["poll_empty_ms_median"] <= 20 and key == "PRIMARY"))
        out.append(Row(
            f"upcoming-window reconcile ({po['upcoming']:,} upcoming)",
            f"{_fmt(po['reconcile_s_median'], ' s')} steady state, "
            f"{_fmt(po['reconcile_after_restart_s'], ' s')} first after a restart (stored "
            f"digests); every row compared (each 60th): {_fmt(po['reconcile_full_s'], ' s')}; "
            f"queued {po['reconcile_queued']}",
            "≤ 1 s", po["reconcile_s_median"] <= 1.0
            and po["reconcile_after_restart_s"] <= 1.0))
    wh = r.get("webhook")
    if wh:
        if wh.get("status") == "n/a":
            out.append(Row("webhook intake", f"n/a: {wh['reason']}",
                           "≥ 1,000 notifications/s, coalesced", None))
        else:
            others = "; ".join(
                f"{label} {_fmt(wh[key], '/s')}" for key, label in (
                    ("gunicorn_log_all_rate_per_s", "access line per notification"),
                    ("gunicorn_no_access_log_rate_per_s", "without access log"),
                    ("werkzeug_rate_per_s", "werkzeug dev server"))
                if isinstance(wh.get(key), int | float))
            out.append(Row(
                f"webhook intake ({wh['channels']} channels, {wh['threads']} client connections, "
                f"{wh.get('server', 'sidecar')})",
                f"{_fmt(wh.get('rate_per_s'), '/s')} 2xx; {wh['worker_notified']:,} "
                f"notifications → {wh['doctor_syncs']} doctor syncs "
                f"({wh['worker_rounds']} sync rounds)" + (f" [{others}]" if others else ""),
                "≥ 1,000 notifications/s, coalesced",
                (wh.get("rate_per_s") or 0) >= 1000
                and wh["doctor_syncs"] <= wh["worker_rounds"] * wh["channels"]))
    ed = r.get("edit")
    if ed:
        out.append(Row(
            f"Google edit → mapping row updated (push, webhook, incremental sync; "
            f"{ed['edits']} Meet-link regenerations over {ed['doctors']} doctors)",
            f"p50 {_fmt(ed['p50_ms'], ' ms')}, p90 {_fmt(ed['p90_ms'], ' ms')}, "
            f"max {_fmt(ed['max_ms'], ' ms')}",
            "(no target; reported)", None))
    me = r.get("memory")
    if me:
        out.append(Row(
            f"resident memory after {me['appointments']:,} appointments processed",
            f"{_fmt(me['rss_final_mb'], ' MB')} (after warm-up {_fmt(me['rss_after_warmup_mb'])}"
            f" MB, growth {_fmt(me['growth_after_warmup_mb'])} MB)",
            "flat after warm-up, ≤ 150 MB",
            me["rss_final_mb"] <= 150 and me["growth_after_warmup_mb"] <= 10))
    return out


def table(results: dict[str, Any]) -> str:
    rs = [Row(**d) for d in results["rows"]]
    head = ("measure", "figure", "target", "met")
    cells = [head] + [(r.measure, r.figure, r.target,
                       "n/a" if r.met is None else ("yes" if r.met else "NO")) for r in rs]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [" | ".join(c[i].ljust(widths[i]) for i in range(4)) for c in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    m = results["machine"]
    lines.append("")
    lines.append(f"machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gb']} GB RAM, "
                 f"Python {m['python']}, MariaDB {m['mariadb']}; mode {results['mode']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny scales, one run each (CI)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--runs", type=int, default=3, help="runs of the light benchmarks")
    p.add_argument("--heavy-runs", type=int, default=1, help="runs of backfill and memory")
    p.add_argument("--only", action="append",
                   choices=["latency", "backfill", "calls", "poll", "webhook", "edit", "memory"],
                   help="run only these benchmarks (repeatable)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    results = run_all(args.quick, args.runs, args.heavy_runs,
                      set(args.only) if args.only else None,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    print(table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
