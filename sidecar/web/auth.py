"""Who is asking: the WordPress user behind the request's ``logged_in`` cookie.

The cookie is checked by :class:`sidecar.wp_auth.CookieValidator` exactly as WordPress checks it
(HMAC, expiry, live session token). Views call :func:`require_user`, which answers 401 with a link
to ``wp-login.php?redirect_to=<this page>`` when nobody is logged in. Also owns the short-lived
``kcsc_flow`` cookie that binds an OAuth ``state`` to the browser that started the flow, so a
state captured from one browser cannot be completed in another.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import g, request

from sidecar.web.pages import PageError, public_url

if TYPE_CHECKING:
    from sidecar.runtime import Runtime

FLOW_COOKIE = "kcsc_flow"
MAX_COOKIE_LENGTH = 4096


def session_cookie(rt: Runtime) -> str | None:
    """The raw ``wordpress_logged_in_*`` cookie value, or None."""
    value = request.cookies.get(rt.cookies.cookie_name)
    if not value or len(value) > MAX_COOKIE_LENGTH:
        return None
    return value


def current_user(rt: Runtime) -> Any | None:
    """The logged-in :class:`sidecar.wp_auth.WpUser`, or None (cached per request)."""
    if "kcsc_user" not in g:
        value = session_cookie(rt)
        g.kcsc_user = rt.cookies.validate(value) if value else None
    return g.kcsc_user


def login_url(rt: Runtime, back_to: str) -> str:
    return f"{rt.site_url}/wp-login.php?redirect_to={quote(back_to, safe='')}"


def require_user(rt: Runtime) -> Any:
    user = current_user(rt)
    if user is None:
        here = public_url(request.full_path.rstrip("?") if request.query_string
                          else request.path)
        raise PageError(401, "Please log in",
                        "You need to be logged in to the clinic's WordPress site to continue.",
                        link=login_url(rt, here), link_text="Log in to WordPress")
    return user


def flow_binding() -> tuple[str, bool]:
    """This browser's flow cookie value and whether it is new (and must be set)."""
    value = request.cookies.get(FLOW_COOKIE, "")
    if 16 <= len(value) <= 128:
        return value, False
    return secrets.token_urlsafe(24), True
