"""An in-process sidecar on a fake clock whose every wait (backoff, rate limiter) advances that
clock: the error storm and the replica scenarios run hours of Google time in seconds, and the
emulator's request log carries the times at which calls were really made."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from sidecar.google_api import GoogleApi, RetryPolicy, retry_reason
from sidecar.ratelimit import RateLimiter
from sidecar.services import attach_google
from sidecar.sync.outbound import OutboundSync
from tests.sync.conftest import SyncWorld

BUSY = ("pending", "creating", "awaiting_conference", "deleting")


@dataclass
class Waits:
    """Seconds of fake time spent waiting, by cause."""

    backoff: list[float] = field(default_factory=list)
    limiter: list[float] = field(default_factory=list)


def wire_google(world: SyncWorld, *, limit: int, attempts: int = 3,
                waits: Waits | None = None) -> Waits:
    """Replace the world's Google wiring: retries and the per-doctor limiter wait on the fake
    clock (recorded in ``waits``); retries are counted in ``kcsc_google_retries``."""
    waits = waits or Waits()
    clock, metrics = world.clock, world.runtime.metrics

    def backoff(seconds: float) -> None:
        waits.backoff.append(seconds)
        clock.advance(seconds)

    def throttle(seconds: float) -> None:
        waits.limiter.append(seconds)
        clock.advance(seconds)

    retry = RetryPolicy(max_attempts=attempts, base_delay=1.0, max_delay=32.0, sleep=backoff,
                        random=random.Random(7).random,
                        on_retry=lambda err: metrics.google_retries.labels(
                            reason=retry_reason(err)).inc())
    api = GoogleApi.from_settings(world.runtime.settings, clock=clock, app_metrics=metrics,
                                  retry=retry,
                                  limiter=RateLimiter(limit, clock=clock, sleep=throttle))
    attach_google(world.runtime, api=api)
    return waits


def new_outbound(world: SyncWorld, worker_id: str, **kwargs: Any) -> OutboundSync:
    kwargs.setdefault("max_workers", 1)
    kwargs.setdefault("rng", random.Random(worker_id))
    outbound = OutboundSync(world.runtime, world.runtime.google_factory, worker_id=worker_id,
                            **kwargs)
    return outbound


def busy(world: SyncWorld) -> tuple[int, datetime | None]:
    """(items still working, earliest next attempt among them)."""
    t = world.runtime.state.tables.items
    with world.engine.connect() as conn:
        n, first = conn.execute(sa.select(sa.func.count(), sa.func.min(t.c.next_attempt_at))
                                .where(t.c.state.in_(BUSY))).one()
    return int(n or 0), first


def settle(world: SyncWorld, outbound: OutboundSync, *, max_rounds: int = 400,
           on_round: Any = None) -> int:
    """Run cycles, jumping the fake clock to the next due attempt, until nothing is busy."""
    for rounds in range(1, max_rounds + 1):
        outbound.run_once()
        if on_round is not None:
            on_round(rounds)
        n, first = busy(world)
        if n == 0:
            return rounds
        now = world.clock.now()
        if first is not None:
            first = first.replace(tzinfo=now.tzinfo) if first.tzinfo is None else first
            if first > now:
                world.clock.advance((first - now).total_seconds() + 0.001)
        else:
            world.clock.advance(1)
    raise AssertionError(f"still busy after {max_rounds} rounds: "
                         f"{world.runtime.state.count_by_state()}")


def max_calls_per_sliding_minute(log: list[dict[str, Any]]) -> dict[str, int]:
    """The most calendar calls any user made within one sliding 60 s window."""
    times: dict[str, list[datetime]] = defaultdict(list)
    for entry in log:
        if str(entry.get("api_method", "")).startswith("calendar.") and entry.get("user"):
            times[entry["user"]].append(datetime.fromisoformat(entry["time"]))
    worst: dict[str, int] = {}
    for user, stamps in times.items():
        stamps.sort()
        best, lo = 0, 0
        for hi, t in enumerate(stamps):
            while stamps[lo] <= t - timedelta(seconds=60):
                lo += 1
            best = max(best, hi - lo + 1)
        worst[user] = best
    return worst


def counter_total(metrics: Any, name: str) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def by_label(metrics: Any, labels: tuple[str, ...]) -> float:
    """Sum of ``kcsc_google_retries_total`` over the given ``reason`` labels."""
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "kcsc_google_retries_total" and \
                    sample.labels.get("reason") in labels:
                total += sample.value
    return total
