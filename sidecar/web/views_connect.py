"""Blueprint: ``GET /connect``, ``GET /oauth/callback``, ``GET /invite/<token>``.

Each view: verify the caller → one call into :mod:`sidecar.web.connect_flow` → a response.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, redirect, request

from sidecar.web import connect_flow
from sidecar.web.auth import FLOW_COOKIE, current_user, flow_binding, require_user
from sidecar.web.pages import PageError, message_page, public_url
from sidecar.web.runtime_access import runtime
from sidecar.web.security import safe_return_url, set_cookie

bp = Blueprint("connect", __name__)

_ID_RE = re.compile(r"[1-9][0-9]{0,18}")


def doctor_param(value: str | None, default: int) -> int:
    """``?doctor=`` / form ``doctor``: a positive whole number, or ``default`` when absent."""
    if value is None or value == "":
        return default
    if not _ID_RE.fullmatch(value):
        raise PageError(400, "Invalid doctor", "doctor must be a WordPress user id (a positive "
                        "whole number).")
    return int(value)


def _to_google(url: str, binding: str, new: bool) -> Response:
    response = redirect(url, code=302)
    if new:
        set_cookie(response, FLOW_COOKIE, binding, max_age=connect_flow.STATE_TTL_SECONDS)
    return response


@bp.get("/connect")
def connect() -> Response:
    rt = runtime()
    user = require_user(rt)
    doctor_id = doctor_param(request.args.get("doctor"), default=user.id)
    return_to = request.args.get("return")
    if return_to is not None and safe_return_url(return_to, rt.site_url) is None:
        raise PageError(400, "Invalid return address",
                        "return must be a page of this site's WordPress admin.")
    connect_flow.authorise(rt, user, doctor_id)
    binding, new = flow_binding()
    url = connect_flow.start(rt, doctor_id=doctor_id, wp_user_id=user.id, binding=binding,
                             return_to=return_to)
    return _to_google(url, binding, new)


@bp.get("/oauth/callback")
def callback() -> Response:
    rt = runtime()
    state = request.args.get("state")
    if not state:
        raise PageError(400, "This sign-in link is not valid",
                        "The request has no state parameter; start again from the sidecar's "
                        "connect page.")
    result = connect_flow.finish(
        rt, state=state, code=request.args.get("code"), error=request.args.get("error"),
        binding=request.cookies.get(FLOW_COOKIE), user=current_user(rt))
    if result.wp_user_id == 0:
        return message_page(200, "Google Calendar connected",
                            "Your Google account is now connected. New telemedicine "
                            "appointments will get a Google Meet link automatically. You can "
                            "close this page.")
    target = safe_return_url(result.return_to, rt.site_url)
    if target is None:
        target = public_url("/me" if result.doctor_id == result.wp_user_id else "/admin")
    return redirect(target, code=303)


@bp.get("/invite/<token>")
def invite(token: str) -> Response:
    rt = runtime()
    binding, new = flow_binding()
    url = connect_flow.open_invite(rt, token, binding=binding)
    current_app.logger.debug("invite link opened")
    return _to_google(url, binding, new)
