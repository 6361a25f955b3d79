"""APScheduler wiring: the periodic single-step jobs of one sidecar process.

:class:`SyncScheduler` owns *when* work runs; *what* runs is in ``sidecar.sync``. Each job is a
plain method (``scan``, ``drain``, ``reconcile``, ``retry``, ``metrics``, ``inbound``) that tests
call directly with a fake clock; :meth:`SyncScheduler.start` hands them to an APScheduler 3
``BackgroundScheduler`` (``max_instances=1``, ``coalesce=True``, jitter on periodic work).

Replicas on one database cooperate: work items are claimed under leases (``sidecar.state``), and
the scan and reconcile jobs each take a database named lock with ``timeout=0``, so while one
replica scans the others skip that run instead of queueing behind it. Stopping finishes the
batch in flight (``shutdown(wait=True)``); an item abandoned by a killed process is safe because
its lease runs out and another worker picks it up.

Inbound sync's jobs (``sidecar.sync.inbound.scheduler_jobs``: due doctors, the polling fallback,
push-channel upkeep) are added when that module is importable (see :func:`inbound_jobs`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from sidecar.db import LockTimeout, named_lock
from sidecar.sync.outbound import PERMANENT_FAILURE_RETRY, CycleResult, OutboundSync

log = logging.getLogger(__name__)

SCAN_LOCK = "kcsc_scan"
RECONCILE_LOCK = "kcsc_reconcile"
#: the fast drain of due items (pending conferences are re-polled after 0.5 s)
DRAIN_SECONDS = 0.5
#: items claimed per drain round at least (and twice the workers); a stop waits for one round
DRAIN_BATCH = 16
METRICS_SECONDS = 10.0


class _ExpectedSkips(logging.Filter):
    """APScheduler warns whenever a run is skipped because the previous one still runs; with
    ``max_instances=1`` on a 0.5 s drain that is the design, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_SKIP_FILTER = _ExpectedSkips()


@dataclass(frozen=True)
class JobSpec:
    """One periodic job: ``func`` every ``seconds`` (± ``jitter``), first run after ``delay``."""

    name: str
    func: Callable[[], Any]
    seconds: float
    jitter: float = 0.0
    delay: float = 0.0


def inbound_jobs(runtime: Any, calendar_for: Callable[[int], Any]) -> list[JobSpec]:
    """Jobs of the inbound sync, when ``sidecar.sync.inbound`` exists; else none.

    The inbound module may expose ``scheduler_jobs(runtime, calendar_for) -> list[JobSpec-like]``
    (objects with ``name``, ``func``, ``seconds`` and optionally ``jitter``); failing that, an
    ``InboundSync(runtime, calendar_for)`` whose ``run_once()`` runs every
    ``sync.inbound_poll_seconds`` and whose ``renew_channels()`` (if present) runs hourly.
    """
    try:
        from sidecar.sync import inbound
    except ImportError:
        # TODO(inbound): nothing to schedule until sidecar/sync/inbound.py lands.
        return []
    factory = getattr(inbound, "scheduler_jobs", None)
    if callable(factory):
        return [JobSpec(j.name, j.func, float(j.seconds), float(getattr(j, "jitter", 0.0)))
                for j in factory(runtime, calendar_for)]
    cls = getattr(inbound, "InboundSync", None)
    if cls is None:
        return []
    sync = cls(runtime, calendar_for)
    seconds = float(runtime.settings.sync.inbound_poll_seconds)
    jobs = []
    if hasattr(sync, "run_once"):
        jobs.append(JobSpec("inbound", sync.run_once, seconds, jitter=seconds / 10))
    if hasattr(sync, "renew_channels"):
        jobs.append(JobSpec("channels", sync.renew_channels, 3600.0, jitter=60.0, delay=5.0))
    return jobs


class SyncScheduler:
    """The sync jobs of one process, runnable one step at a time or on a background scheduler.

    Registers the ``scheduler`` readiness check on ``runtime`` when built.
    """

    def __init__(
        self,
        runtime: Any,
        *,
        outbound: OutboundSync | None = None,
        with_inbound: bool = True,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.rt = runtime
        self.engine: sa.Engine = runtime.engine
        self.clock = runtime.clock
        calendar_for = runtime.google_factory
        if calendar_for is None:
            raise ValueError("the runtime has no Google client factory")
        self.outbound = outbound or OutboundSync(runtime, calendar_for,
                                                 max_workers=runtime.settings.sync.workers,
                                                 per_doctor=runtime.settings.sync.per_doctor)
        self.drain_seconds = drain_seconds
        self.extra_jobs = inbound_jobs(runtime, calendar_for) if with_inbound else []
        self._stopping = threading.Event()
        self._scheduler: Any = None
        self._started_at: datetime | None = None
        self.last_ok: dict[str, datetime] = {}
        self.last_error: dict[str, str] = {}
        self.inbound_results: dict[str, Any] = {}
        runtime.add_readiness("scheduler", self.readiness)

    # ------------------------------------------------------------------ the jobs
    def scan(self) -> CycleResult | None:
        """New appointments since the last scan, then process what is due. ``None`` when
        another worker holds the scan lock (this run is skipped)."""
        result = self.scan_only()
        if result is not None:
            result.merge(self.drain())
        return result

    def scan_only(self) -> CycleResult | None:
        """New appointments since the last scan, without processing them; ``None`` when
        skipped. The periodic job runs this and wakes the drain job: a scan that drained
        inline could not run again until its drain ended, and under a steady stream of
        bookings that held new ones back by a whole drain round."""
        try:
            with named_lock(self.engine, SCAN_LOCK, timeout=0):
                return self.outbound.scan_new()
        except LockTimeout:
            log.debug("scan skipped: another worker is scanning")
            return None

    def _scan_job(self) -> None:
        result = self.scan_only()
        if result is not None and result.queued:
            self._wake("drain")

    def _wake(self, job_id: str) -> None:
        """Run ``job_id`` now. If it is running already, APScheduler skips this run; a running
        drain looks for newly due items itself (``OutboundSync.process_due`` with a limit)."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        try:
            scheduler.modify_job(job_id, next_run_time=datetime.now(tz=UTC))
        except Exception as err:  # the scheduler is shutting down; the next tick comes anyway
            log.debug("could not wake %s: %s", job_id, type(err).__name__)

    def drain(self) -> CycleResult:
        """Process due items in small rounds until none is due or the scheduler stops."""
        total = CycleResult()
        # Fewer items than workers per round would leave workers idle while the round's
        # slowest item finishes.
        batch = max(DRAIN_BATCH, 2 * self.outbound.max_workers)
        while True:
            got = self.outbound.process_due(limit=batch)
            total.merge(got)
            if got.processed < batch or self._stopping.is_set():
                return total

    def reconcile(self) -> CycleResult | None:
        """Compare the upcoming window with stored fingerprints; ``None`` when skipped."""
        try:
            with named_lock(self.engine, RECONCILE_LOCK, timeout=0):
                result = self.outbound.reconcile()
        except LockTimeout:
            log.debug("reconcile skipped: another worker is reconciling")
            return None
        result.merge(self.drain())
        return result

    def retry(self) -> int:
        """Failed items become due again with backoff: ``sync.retry_seconds`` after the first
        failure, doubling per attempt, at most every six hours. Returns how many were queued."""
        now = self.clock.now()
        base = float(self.rt.settings.sync.retry_seconds)
        cap = PERMANENT_FAILURE_RETRY.total_seconds()
        t = self.rt.state.tables.items
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.appointment_id, t.c.attempts, t.c.updated_at)
                                .where(t.c.state == "failed")).all()
        queued = 0
        for appointment_id, attempts, updated_at in rows:
            wait = min(cap, base * 2 ** min(max(int(attempts or 1) - 1, 0), 20))
            failed_at = _aware(updated_at)
            if failed_at is None or failed_at + timedelta(seconds=wait) <= now:
                queued += bool(self.rt.state.requeue(int(appointment_id), now=now))
        if queued:
            log.info("retry: %s failed items queued again", queued)
        return queued

    def metrics(self) -> None:
        self.outbound.update_queue_metrics()

    def run_cycle(self) -> CycleResult:
        """One full cycle, as ``kc-sidecar sync-once`` runs it: the inbound jobs (changes made
        in Google), then scan, reconcile and processing, then metrics. Skipped steps (lock held
        elsewhere) add nothing; inbound failures count as failures. Each inbound job's own
        result is kept in :attr:`inbound_results`."""
        total = CycleResult()
        for job in self.extra_jobs:
            got = job.func()
            if isinstance(got, CycleResult):
                total.merge(got)
                continue
            self.inbound_results[job.name] = got
            total.failed += int(getattr(got, "failed", 0) or 0)
            total.errors.extend(str(e) for e in (getattr(got, "errors", None) or []))
        for step in (self.scan, self.reconcile):
            result = step()
            if result is not None:
                total.merge(result)
        self.metrics()
        return total

    # ------------------------------------------------------------------ background running
    def jobs(self) -> list[JobSpec]:
        sync = self.rt.settings.sync
        poll = float(sync.poll_seconds)
        reconcile = float(sync.reconcile_seconds)
        return [
            JobSpec("scan", self._scan_job, poll, jitter=min(0.5, poll / 10)),
            JobSpec("drain", self.drain, self.drain_seconds),
            JobSpec("reconcile", self.reconcile, reconcile, jitter=min(5.0, reconcile / 10)),
            JobSpec("retry", self.retry, float(sync.retry_seconds),
                    jitter=min(5.0, sync.retry_seconds / 10), delay=1.0),
            JobSpec("metrics", self.metrics, METRICS_SECONDS, delay=1.0),
            *self.extra_jobs,
        ]

    def _guarded(self, name: str, func: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            if self._stopping.is_set():
                return
            try:
                func()
            except Exception as err:  # a job's failure must not kill the scheduler
                self.last_error[name] = f"{type(err).__name__}: {err}"
                log.exception("scheduler job %s failed: %s", name, type(err).__name__)
                return
            self.last_ok[name] = self.clock.now()
            self.last_error.pop(name, None)

        return run

    def start(self) -> None:
        """Start the background scheduler (threads); the scan and reconcile run at once."""
        from apscheduler.schedulers.background import BackgroundScheduler

        if self._scheduler is not None:
            return
        logging.getLogger("apscheduler.scheduler").addFilter(_SKIP_FILTER)  # idempotent
        self._stopping.clear()
        scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 30},
        )
        now = datetime.now(tz=UTC)
        for job in self.jobs():
            scheduler.add_job(
                self._guarded(job.name, job.func), "interval", id=job.name, name=job.name,
                seconds=job.seconds, jitter=job.jitter or None,
                next_run_time=now + timedelta(seconds=job.delay),
            )
        scheduler.start()
        self._scheduler = scheduler
        self._started_at = self.clock.now()
        log.info("scheduler started: %s", ", ".join(j.name for j in self.jobs()))

    def stop(self, wait: bool = True) -> None:
        """Stop taking new work, finish the round in flight (``wait``), then return."""
        self._stopping.set()
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=wait)
            log.info("scheduler stopped")

    @property
    def running(self) -> bool:
        return self._scheduler is not None and bool(self._scheduler.running)

    def readiness(self) -> str | None:
        """``None`` when the scheduler runs and its scan job is not stuck in errors."""
        if not self.running:
            return "scheduler is not running"
        error = self.last_error.get("scan")
        if error:
            return f"scan job failing ({error.split(':')[0]})"
        return None


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
