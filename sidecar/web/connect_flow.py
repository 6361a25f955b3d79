"""The connect / disconnect service behind the web views and the CLI: one function per use case.

Views verify the caller (cookie, CSRF) and map results to responses; everything that touches the
database or Google for connecting a doctor lives here:

* :func:`start` — a PKCE pair and a nonce row (verifier, doctor, WordPress user, return URL kept
  server-side), then a signed 10-minute ``state`` bound to that nonce, the doctor, the user and
  the browser's flow cookie; returns Google's authorization URL.
* :func:`finish` — the callback: verify the state (signature, expiry, browser, user), consume the
  nonce (single use, before anything else), exchange the code, insist on the calendar scope, read
  the account's e-mail (the primary calendar's id, with the new token; best effort), and store the
  tokens — together with consuming the invite, if any — in one transaction. Every callback is
  counted in ``oauth_connections{outcome}``.
* :func:`create_invite` / :func:`open_invite` — signed single-use invite links (the CLI's
  ``connect-url`` and the admin page). An invite is consumed when the connection it started is
  stored, so a mail scanner opening the link does not burn it; its expiry still bounds it.
* :func:`disconnect` (counted in ``disconnections``) and :func:`doctor_rows` for the pages.

Every refusal is a :class:`FlowError` carrying the HTTP status and a message for the user; no
partial writes happen on any refusal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sidecar import accounts, oauth, wp_auth
from sidecar.google_api import FreshGrant, GoogleError, OAuthError, RetryPolicy, Transient
from sidecar.signing import PURPOSE_INVITE, PURPOSE_OAUTH, TokenError, fingerprint

if TYPE_CHECKING:
    from sidecar.runtime import Runtime
    from sidecar.wp_auth import WpUser

log = logging.getLogger(__name__)

STATE_TTL_SECONDS = 600
MAX_EMAIL_LENGTH = 254
MAX_INVITE_TTL_SECONDS = 30 * 86400


class FlowError(Exception):
    """A refusal with the status code and a message meant for the person at the browser;
    ``outcome`` is its ``oauth_connections`` label when it ends a callback."""

    def __init__(self, status: int, title: str, message: str, *, outcome: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.outcome = outcome


@dataclass(frozen=True)
class Connected:
    """Outcome of a successful callback."""

    doctor_id: int
    wp_user_id: int  # 0 when the flow came from an invite link
    return_to: str | None


@dataclass(frozen=True)
class DoctorRow:
    """One line of the admin page / the doctor's own page."""

    doctor_id: int
    name: str
    status: str  # "connected" | "not_connected"
    google_email: str | None
    last_error: str | None


# -- authorisation --------------------------------------------------------------------------


def authorise(rt: Runtime, user: WpUser, doctor_id: int) -> None:
    """FlowError 403/404 unless ``user`` may manage ``doctor_id`` and that user is a doctor."""
    with rt.engine.connect() as conn:
        if not wp_auth.can_manage_doctor(conn, rt.schema, user, doctor_id):
            raise FlowError(403, "Not allowed",
                            "Your WordPress account may not manage this doctor's Google "
                            "connection.")
        if not wp_auth.is_doctor(conn, rt.schema, doctor_id):
            raise FlowError(404, "No such doctor",
                            f"WordPress user {doctor_id} is not a KiviCare doctor on this site.")


def manageable(rt: Runtime, user: WpUser) -> list[int]:
    with rt.engine.connect() as conn:
        return sorted(wp_auth.manageable_doctor_ids(conn, rt.schema, user))


# -- OAuth round trip -------------------------------------------------------------------------


def start(rt: Runtime, *, doctor_id: int, wp_user_id: int, binding: str,
          return_to: str | None = None, invite_nonce: str | None = None) -> str:
    """Google's authorization URL for connecting ``doctor_id``; the caller redirects to it."""
    now = rt.clock.time()
    verifier, challenge = oauth.new_pkce_pair()
    expires_at = now + STATE_TTL_SECONDS
    with rt.engine.begin() as conn:
        rt.nonces.purge(conn, now)  # long-expired states and invites; indexed, usually nothing
        nonce = rt.nonces.issue(conn, purpose=PURPOSE_OAUTH, doctor_id=doctor_id,
                                wp_user_id=wp_user_id, now=now, expires_at=expires_at,
                                code_verifier=verifier, return_to=return_to,
                                invite_nonce=invite_nonce)
    state = rt.signer.sign(PURPOSE_OAUTH, {"n": nonce, "d": doctor_id, "u": wp_user_id,
                                           "b": fingerprint(binding)}, expires_at=expires_at)
    return oauth.build_authorization_url(rt.settings, state, challenge)


def _bad_state(message: str) -> FlowError:
    return FlowError(400, "This sign-in link is not valid", message, outcome="bad_state")


def finish(rt: Runtime, *, state: str, code: str | None, error: str | None, binding: str | None,
           user: WpUser | None) -> Connected:
    """Complete the callback. Raises FlowError for every refusal, with nothing stored."""
    try:
        result = _finish(rt, state=state, code=code, error=error, binding=binding, user=user)
    except FlowError as err:
        rt.metrics.oauth_connection(err.outcome)
        raise
    except Exception:
        rt.metrics.oauth_connection("error")
        raise
    rt.metrics.oauth_connection("connected")
    return result


def _finish(rt: Runtime, *, state: str, code: str | None, error: str | None,
            binding: str | None, user: WpUser | None) -> Connected:
    now = rt.clock.time()
    try:
        claims = rt.signer.verify(PURPOSE_OAUTH, state, now=now)
    except TokenError as err:
        raise _bad_state(str(err)) from None
    nonce, doctor_id, wp_user_id = claims.get("n"), claims.get("d"), claims.get("u")
    if not (isinstance(nonce, str) and isinstance(doctor_id, int) and isinstance(wp_user_id, int)):
        raise _bad_state("The security token is malformed.")
    if not binding or fingerprint(binding) != claims.get("b"):
        raise _bad_state("This sign-in was started in another browser (or its cookie was "
                         "cleared). Please start again from the same browser.")
    if wp_user_id and (user is None or user.id != wp_user_id):
        raise _bad_state("This sign-in was started by a different WordPress user. Log in as "
                         "that user, or start again.")
    with rt.engine.begin() as conn:
        try:
            record = rt.nonces.consume(conn, nonce, PURPOSE_OAUTH, now)
        except TokenError as err:
            raise _bad_state(str(err)) from None
    if record.doctor_id != doctor_id or record.wp_user_id != wp_user_id:
        raise _bad_state("The security token does not match its record.")
    if error:
        if error == "access_denied":
            raise FlowError(400, "Google access was not granted",
                            "You chose not to give the clinic access to your Google Calendar, "
                            "so nothing was connected. You can start again at any time.",
                            outcome="denied")
        raise FlowError(400, "Google sign-in failed",
                        f"Google reported an error ({error[:64]}); nothing was connected.")
    if not code:
        raise FlowError(400, "Google sign-in failed",
                        "Google did not return an authorization code; nothing was connected.")
    if user is not None and wp_user_id:
        authorise(rt, user, doctor_id)  # permissions may have changed in the last minutes
    token = _exchange(rt, code, record.code_verifier or "")
    if not oauth.granted_calendar_scope(token.scope):
        oauth.revoke(rt.settings, token.refresh_token or token.access_token)
        raise FlowError(400, "Calendar access was not granted",
                        "Google connected your account but without access to Google Calendar "
                        "(the calendar box on Google's consent page was left unticked). Nothing "
                        "was stored; please start again and allow calendar access.",
                        outcome="scope_missing")
    email = account_email(rt, doctor_id, token.access_token)
    with rt.engine.begin() as conn:
        if record.invite_nonce:
            try:
                rt.nonces.consume(conn, record.invite_nonce, PURPOSE_INVITE, now)
            except TokenError as err:
                raise FlowError(400, "This invite link is no longer valid", str(err),
                                outcome="bad_state") from None
        try:
            rt.accounts.store_connection(conn, doctor_id, token, now, google_email=email)
            if email is None:  # an address from an earlier grant may name another account
                rt.state.upsert_doctor(doctor_id, conn=conn, google_email=None)
        except accounts.NeedsReconnect as err:
            raise FlowError(400, "Google did not grant offline access",
                            f"{err} Nothing was stored; please start again.") from None
    log.info("doctor %s connected a Google account (started by user %s)", doctor_id,
             wp_user_id or "invite")
    return Connected(doctor_id=doctor_id, wp_user_id=wp_user_id, return_to=record.return_to)


def account_email(rt: Runtime, doctor_id: int, access_token: str) -> str | None:
    """The Google account's e-mail: the primary calendar's id, read with the token just issued
    (a calendar scope is all we hold). Best effort: one attempt; any failure is logged and
    gives None, and connecting goes ahead without the address."""
    api = getattr(rt, "google_api", None)
    if api is None:
        return None
    try:
        calendar = api.calendar(FreshGrant(doctor_id, access_token),
                                retry=RetryPolicy(max_attempts=1)).get_calendar("primary")
    except Exception as err:  # best effort by contract: never blocks connecting
        detail = (err.reason or err.status or "") if isinstance(err, GoogleError) else ""
        log.warning("doctor %s: reading the Google account's e-mail failed (%s %s); connecting "
                    "without it", doctor_id, type(err).__name__, detail)
        return None
    email = calendar.get("id") if isinstance(calendar, dict) else None
    if not isinstance(email, str) or "@" not in email or len(email) > MAX_EMAIL_LENGTH:
        log.warning("doctor %s: the primary calendar's id is not an e-mail address; connecting "
                    "without it", doctor_id)
        return None
    return email


def _exchange(rt: Runtime, code: str, verifier: str) -> Any:
    if len(code) > 512:
        raise FlowError(400, "Google sign-in failed", "The authorization code is malformed.")
    try:
        return oauth.exchange_code(rt.settings, code, verifier)
    except OAuthError as err:
        raise FlowError(400, "Google sign-in failed",
                        f"Google refused the authorization code ({err.error}); it may have "
                        "expired or been used already. Please start again.") from None
    except Transient:
        raise FlowError(502, "Google is not reachable",
                        "Google did not answer the sign-in request; please try again in a "
                        "minute.") from None
    except GoogleError as err:
        raise FlowError(502, "Google sign-in failed",
                        f"Google answered the sign-in request with an error ({type(err).__name__})."
                        ) from None


# -- invites ----------------------------------------------------------------------------------


def create_invite(rt: Runtime, doctor_id: int, ttl_seconds: float) -> str:
    """A signed single-use URL that lets ``doctor_id`` connect without a WordPress login."""
    if not 60 <= ttl_seconds <= MAX_INVITE_TTL_SECONDS:
        raise FlowError(400, "Invalid lifetime",
                        "An invite link must be valid for between 1 minute and 30 days.")
    with rt.engine.connect() as conn:
        if not wp_auth.is_doctor(conn, rt.schema, doctor_id):
            raise FlowError(404, "No such doctor",
                            f"WordPress user {doctor_id} is not a KiviCare doctor on this site.")
    now = rt.clock.time()
    expires_at = now + ttl_seconds
    with rt.engine.begin() as conn:
        nonce = rt.nonces.issue(conn, purpose=PURPOSE_INVITE, doctor_id=doctor_id, now=now,
                                expires_at=expires_at)
    token = rt.signer.sign(PURPOSE_INVITE, {"n": nonce, "d": doctor_id}, expires_at=expires_at)
    return f"{rt.public_url}/invite/{token}"


def open_invite(rt: Runtime, token: str, *, binding: str) -> str:
    """Start the OAuth flow for the doctor named by a valid, unused invite; returns the URL."""
    now = rt.clock.time()
    try:
        claims = rt.signer.verify(PURPOSE_INVITE, token, now=now)
    except TokenError as err:
        raise FlowError(400, "This invite link is not valid", str(err)) from None
    nonce, doctor_id = claims.get("n"), claims.get("d")
    if not isinstance(nonce, str) or not isinstance(doctor_id, int):
        raise FlowError(400, "This invite link is not valid", "The link is malformed.")
    with rt.engine.connect() as conn:
        try:
            record = rt.nonces.check_unused(conn, nonce, PURPOSE_INVITE, now)
        except TokenError as err:
            raise FlowError(400, "This invite link is not valid", str(err)) from None
        if record.doctor_id != doctor_id:
            raise FlowError(400, "This invite link is not valid", "The link is malformed.")
        if not wp_auth.is_doctor(conn, rt.schema, doctor_id):
            raise FlowError(404, "No such doctor",
                            "The doctor this link was made for is no longer a KiviCare doctor.")
    return start(rt, doctor_id=doctor_id, wp_user_id=0, binding=binding, invite_nonce=nonce)


# -- disconnect and status ---------------------------------------------------------------------


def user_exists(rt: Runtime, user_id: int) -> bool:
    """True when WordPress has this user (a former doctor may still hold tokens)."""
    with rt.engine.connect() as conn:
        return wp_auth.load_user(conn, rt.schema, user_id) is not None


def disconnect(rt: Runtime, doctor_id: int) -> accounts.DisconnectResult:
    """Remove the doctor's tokens and flags; revoke at Google best effort (never blocks)."""
    # No transaction open: the removal is committed before the (slow, best-effort) revoke.
    with rt.engine.connect() as conn:
        result = rt.accounts.disconnect(conn, doctor_id,
                                        revoke=lambda token: oauth.revoke(rt.settings, token),
                                        stop_channels=rt.stop_channels)
    rt.metrics.disconnections.inc()
    return result


def _problem(info: Any) -> str | None:
    """What the pages show as the doctor's last problem (a plain disconnect is none)."""
    if info is None:
        return None
    if info.last_error:
        return str(info.last_error)
    # accounts records a revoked grant as "needs_reconnect" (older rows: "not_connected")
    if info.status in ("not_connected", "needs_reconnect") and \
            info.status_reason not in (None, "disconnected"):
        return str(info.status_reason)
    return None


def doctor_rows(rt: Runtime, doctor_ids: list[int]) -> list[DoctorRow]:
    rows: list[DoctorRow] = []
    with rt.engine.connect() as conn:
        statuses = rt.accounts.connection_statuses(conn, doctor_ids)
        for doctor_id in doctor_ids:
            user = wp_auth.load_user(conn, rt.schema, doctor_id)
            info = rt.state.get_doctor(doctor_id, conn=conn)
            rows.append(DoctorRow(
                doctor_id=doctor_id,
                name=user.display_name if user else f"user {doctor_id}",
                status=statuses[doctor_id],
                google_email=info.google_email if info else None,
                last_error=_problem(info),
            ))
    return rows
