"""Request hardening shared by every route: size limits, security headers, CSRF, safe redirects.

* Limits: bodies above ``MAX_CONTENT_LENGTH`` → 413, query strings above ``MAX_QUERY`` → 414,
  request headers above ``MAX_HEADER_BYTES`` in total → 431, all before any view runs.
* Headers on every response: ``Content-Security-Policy: default-src 'self'`` (no inline script or
  style; pages load ``/assets/app.css``), ``X-Frame-Options: DENY``, ``Referrer-Policy:
  no-referrer``, ``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-store``.
* CSRF for every POST: a signed token (:mod:`sidecar.signing`, purpose ``csrf``) bound to both the
  WordPress ``logged_in`` cookie (so it dies with the session) and a random ``kcsc_csrf`` cookie
  (``SameSite=Strict``, a signed double-submit), plus an ``Origin``/``Sec-Fetch-Site`` check.
  Our pages send ``Referrer-Policy: no-referrer``, which makes browsers send ``Origin: null`` on
  form posts, so a missing or ``null`` Origin alone is not a rejection; a foreign one is.
* :func:`safe_return_url`: ``?return=`` is followed only to the WordPress admin of the same site.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request

from sidecar.signing import PURPOSE_CSRF, Signer, TokenError, fingerprint
from sidecar.web.pages import PageError

MAX_CONTENT_LENGTH = 8 * 1024
MAX_QUERY = 2048
MAX_HEADER_BYTES = 16 * 1024
CSRF_COOKIE = "kcsc_csrf"
CSRF_FIELD = "csrf_token"
CSRF_TTL_SECONDS = 8 * 3600

CSP = ("default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; "
       "object-src 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def install(app: Flask) -> None:
    """Register the limits and header hooks on ``app``."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_CONTENT_LENGTH
    app.config["MAX_FORM_PARTS"] = 50
    app.before_request(_check_limits)
    app.after_request(_add_headers)


def _check_limits() -> None:
    if len(request.query_string) > MAX_QUERY:
        raise PageError(414, "Address too long",
                        f"The query string is longer than {MAX_QUERY} bytes.")
    size = sum(len(k) + len(v) + 4 for k, v in request.headers.items())
    if size > MAX_HEADER_BYTES:
        raise PageError(431, "Request headers too large",
                        f"The request headers exceed {MAX_HEADER_BYTES} bytes; clear this "
                        "site's cookies and try again.")
    if request.content_length is not None and request.content_length > MAX_CONTENT_LENGTH:
        raise PageError(413, "Request too large",
                        f"The request body is larger than {MAX_CONTENT_LENGTH} bytes.")


def _add_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path != "/assets/app.css":
        response.headers["Cache-Control"] = "no-store"
    new_csrf = g.get("kcsc_new_csrf_cookie")
    if new_csrf:
        set_cookie(response, CSRF_COOKIE, new_csrf, max_age=CSRF_TTL_SECONDS, samesite="Strict")
    return response


def set_cookie(response: Response, name: str, value: str, *, max_age: int,
               samesite: str = "Lax") -> None:
    """A host-only, HttpOnly cookie scoped to our public path; ``Secure`` under https."""
    base: str = current_app.config["KCSC_PUBLIC_URL"]
    parts = urlsplit(base)
    response.set_cookie(name, value, max_age=max_age, path=parts.path or "/",
                        secure=parts.scheme == "https", httponly=True, samesite=samesite)


# -- CSRF -----------------------------------------------------------------------------------


def _csrf_cookie_value() -> str:
    value = request.cookies.get(CSRF_COOKIE, "")
    if 16 <= len(value) <= 128:
        return value
    if "kcsc_new_csrf_cookie" not in g:
        g.kcsc_new_csrf_cookie = secrets.token_urlsafe(24)
    return str(g.kcsc_new_csrf_cookie)


def csrf_token(signer: Signer, session_cookie: str, now: float) -> str:
    """A token for forms on this page, bound to the WordPress session and the CSRF cookie."""
    claims = {"s": fingerprint(session_cookie), "c": fingerprint(_csrf_cookie_value())}
    return signer.sign(PURPOSE_CSRF, claims, expires_at=now + CSRF_TTL_SECONDS)


def verify_csrf(signer: Signer, session_cookie: str, now: float) -> None:
    """Reject a POST that did not come from one of our own pages in this session (403)."""
    public_origin = origin_of(current_app.config["KCSC_PUBLIC_URL"])
    origin = request.headers.get("Origin")
    if origin and origin != "null" and origin.lower() != public_origin:
        raise PageError(403, "Request refused",
                        "This form was submitted from another site.")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise PageError(403, "Request refused",
                        "This form was submitted from another site.")
    try:
        claims = signer.verify(PURPOSE_CSRF, request.form.get(CSRF_FIELD, ""), now=now)
    except TokenError as err:
        raise PageError(403, "Request refused",
                        f"{err} Reload the page and submit the form again.") from None
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if (claims.get("s") != fingerprint(session_cookie) or not cookie
            or claims.get("c") != fingerprint(cookie)):
        raise PageError(403, "Request refused",
                        "The form does not belong to your current login session. Reload the "
                        "page and submit the form again.")


# -- redirects ------------------------------------------------------------------------------


def safe_return_url(candidate: str | None, site_url: str) -> str | None:
    """``candidate`` when it is an absolute URL into ``{site_url}/wp-admin/``, else None.

    Compared after parsing, on scheme, host and port exactly and on the path prefix; backslashes,
    control characters, user info and ``..`` segments are refused outright (no open redirect).
    """
    if not candidate or not site_url or len(candidate) > 2000:
        return None
    if any(ch in candidate for ch in "\\\r\n\t\x00") or any(ord(ch) < 32 for ch in candidate):
        return None
    got, site = urlsplit(candidate), urlsplit(site_url.rstrip("/"))
    if got.scheme not in ("http", "https") or got.username or got.password or "@" in got.netloc:
        return None
    if (got.scheme, got.netloc.lower()) != (site.scheme, site.netloc.lower()):
        return None
    if not got.path.startswith(site.path + "/wp-admin/") or "/../" in got.path + "/":
        return None
    if "/./" in got.path or "%2e" in got.path.lower() or "%2f" in got.path.lower():
        return None
    return candidate
