"""``POST /webhook/google``: Google Calendar push notifications.

The view only verifies and marks work due (``sidecar.sync.channels.verify_notification``, then
the process's :class:`~sidecar.sync.inbound.InboundWorker`); it never calls Google, so it
answers in a few milliseconds whatever the burst. Google sends no body; one is ignored.
Channel records come from the process's ``ChannelCache`` (short TTL, dropped when this process
stops or renews a channel), so a burst on known channels reads no database row.

The worker is made lazily, on the first notification of this process, because a worker thread
must be started after a pre-forking server has forked. Entry points and tests may install their
own with :func:`install_worker` before requests arrive.
"""

from __future__ import annotations

import logging
import threading

from flask import Blueprint, Flask, Response, current_app, request

from sidecar.sync.channels import ChannelManager, channel_cache, verify_notification
from sidecar.sync.inbound import InboundSync, InboundWorker
from sidecar.web.runtime_access import runtime

log = logging.getLogger(__name__)

bp = Blueprint("webhook", __name__)

EXTENSION = "kcsc_inbound_worker"
_guard = threading.Lock()


def install_worker(app: Flask, worker: InboundWorker) -> InboundWorker:
    """Use ``worker`` for this app's notifications (started or not: the caller decides)."""
    app.extensions[EXTENSION] = worker
    return worker


def worker_for(app: Flask) -> InboundWorker:
    """This app's worker, created and started on first use."""
    worker = app.extensions.get(EXTENSION)
    if worker is not None:
        return worker  # type: ignore[no-any-return]
    with _guard:
        worker = app.extensions.get(EXTENSION)
        if worker is None:
            rt = app.extensions["kcsc_runtime"]
            inbound = InboundSync(rt, channels=ChannelManager(rt))
            worker = install_worker(app, InboundWorker(inbound).start())
    return worker  # type: ignore[no-any-return]


@bp.post("/webhook/google")
def google_push() -> Response:
    rt = runtime()
    verdict = verify_notification(rt.state, request.headers, cache=channel_cache(rt.state))
    rt.metrics.webhook_notifications.labels(outcome=verdict.outcome).inc()
    if verdict.channel is not None and verdict.outcome == "accepted":
        worker_for(current_app._get_current_object()).notify(  # type: ignore[attr-defined]
            verdict.channel.doctor_id)
    elif verdict.channel is not None and verdict.outcome == "stopped_channel":
        worker_for(current_app._get_current_object()).stop_stale_channel(  # type: ignore[attr-defined]
            verdict.channel)
    if verdict.status >= 400:
        log.info("push notification rejected: %s", verdict.outcome)
    return Response(verdict.message + "\n", status=verdict.status, mimetype="text/plain")
