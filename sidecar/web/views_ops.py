"""Blueprint: ``GET /healthz`` (the process answers), ``GET /readyz`` (the runtime's readiness
checks: database, schema, scheduler; 503 with JSON reasons when one fails) and ``GET /metrics``
(Prometheus text from ``runtime.metrics``). No authentication: none of them reveal a secret."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from sidecar.web.runtime_access import runtime

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    problems = runtime().readiness()
    if problems:
        response = jsonify(status="unavailable", problems=problems)
        response.status_code = 503
        return response
    return jsonify(status="ready")


@bp.get("/metrics")
def metrics() -> Response:
    body, content_type = runtime().metrics.render(request.headers.get("Accept"))
    return Response(body, mimetype=None, content_type=content_type)
