"""Blueprint: the doctor's page ``GET /me``, the manager's page ``GET /admin`` and the two
CSRF-protected forms ``POST /disconnect`` and ``POST /admin/invite``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, redirect, request

from sidecar.web import connect_flow
from sidecar.web.auth import require_user, session_cookie
from sidecar.web.pages import PageError, page, public_url
from sidecar.web.runtime_access import runtime
from sidecar.web.security import csrf_token, verify_csrf
from sidecar.web.views_connect import doctor_param

if TYPE_CHECKING:
    from sidecar.runtime import Runtime
    from sidecar.wp_auth import WpUser

bp = Blueprint("pages", __name__)

INVITE_TTL_SECONDS = 7 * 86400


def _csrf(rt: Runtime) -> str:
    return csrf_token(rt.signer, session_cookie(rt) or "", rt.clock.time())


@bp.get("/me")
def me() -> Response:
    rt = runtime()
    user = require_user(rt)
    doctors = connect_flow.manageable(rt, user)
    if user.id not in doctors:
        if doctors:
            return redirect(public_url("/admin"), code=303)
        raise PageError(403, "Not a doctor",
                        "Only KiviCare doctors can connect a Google account here.")
    row = connect_flow.doctor_rows(rt, [user.id])[0]
    return page("me.html", user=user, row=row, csrf=_csrf(rt))


@bp.get("/admin")
def admin() -> Response:
    rt = runtime()
    user = require_user(rt)
    doctors = connect_flow.manageable(rt, user)
    if not doctors and not user.is_administrator:
        raise PageError(403, "Not allowed",
                        "Your WordPress account does not manage any doctor's Google connection.")
    rows = connect_flow.doctor_rows(rt, doctors)
    return page("admin.html", user=user, rows=rows, csrf=_csrf(rt))


def _verified_post(rt: Runtime) -> tuple[WpUser, int]:
    user = require_user(rt)
    verify_csrf(rt.signer, session_cookie(rt) or "", rt.clock.time())
    doctor_id = doctor_param(request.form.get("doctor"), default=user.id)
    connect_flow.authorise(rt, user, doctor_id)
    return user, doctor_id


@bp.post("/disconnect")
def disconnect() -> Response:
    rt = runtime()
    user, doctor_id = _verified_post(rt)
    connect_flow.disconnect(rt, doctor_id)
    back = "/me" if doctor_id == user.id and request.form.get("back") != "admin" else "/admin"
    return redirect(public_url(back), code=303)


@bp.post("/admin/invite")
def create_invite() -> Response:
    rt = runtime()
    _user, doctor_id = _verified_post(rt)
    url = connect_flow.create_invite(rt, doctor_id, INVITE_TTL_SECONDS)
    row = connect_flow.doctor_rows(rt, [doctor_id])[0]
    return page("invite.html", row=row, invite_url=url, days=INVITE_TTL_SECONDS // 86400)
