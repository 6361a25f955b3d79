"""Who is this browser? WordPress's ``logged_in`` cookie, checked exactly as WordPress 6.1 does.

The sidecar sits beside the PHP site on the same domain, so a doctor who is logged in to
WordPress sends the ``wordpress_logged_in_<COOKIEHASH>`` cookie to the sidecar too. This module
repeats ``wp_validate_auth_cookie()`` (wp-includes/pluggable.php) against the shared database:

1. the URL-decoded value is ``user_login|expiration|token|hmac`` (exactly four fields);
2. ``expiration`` (Unix seconds) is not in the past (``expiration < now`` rejects);
3. a user with that login exists;
4. ``key = HMAC-MD5(user_login|pass_frag|expiration|token, LOGGED_IN_KEY . LOGGED_IN_SALT)``
   (``wp_hash``), ``pass_frag`` = characters 8–11 of the stored password hash, so a password
   change logs every session out; ``hmac`` must equal ``HMAC-SHA256(user_login|expiration|token,
   key)`` in hex, compared in constant time;
5. ``sha256(token)`` is a key of the user's ``session_tokens`` user meta whose ``expiration`` is
   ``>= now`` (``WP_Session_Tokens::verify``), so logging out in WordPress logs out here too.

Keys and salts follow ``wp_salt('logged_in')``: ``LOGGED_IN_KEY`` (else ``SECRET_KEY``) and
``LOGGED_IN_SALT`` from wp-config.php or settings, ignoring a value that is the sample phrase
``put your unique phrase here`` or that is shared by two of the ten key/salt constants; whatever
is missing falls back to the ``logged_in_key`` / ``logged_in_salt`` site options, which WordPress
generates and stores on first use. Only the English sample phrase is recognised (WordPress also
ignores its translation for the site's locale).

Deliberate differences: WordPress grants POST and Ajax requests an hour of grace on the cookie's
expiry, but the session token has the same expiry and no grace, so the grace never admits a
cookie on a site using the default session store; it is not modelled. ``sanitize_user()`` is not
applied to the login before lookup; a cookie whose login differs from the stored one can never
carry a valid HMAC. ``get_site_option`` is read from the blog's options table (single site);
networks keep these options in ``sitemeta``, which is not read.

``validate`` never raises for bad input and logs why it refused at INFO level, never the cookie.

The second half answers "may this user manage that doctor's Google connection": administrators
manage everyone, doctors themselves, clinic admins the doctors of the clinics they administer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import sqlalchemy as sa

from sidecar.clock import Clock
from wp_schema.meta import UserMeta
from wp_schema.phpvalue import maybe_unserialize
from wp_schema.reflect import SiteSchema

log = logging.getLogger(__name__)

ADMINISTRATOR = "administrator"
DOCTOR = "kiviCare_doctor"
CLINIC_ADMIN = "kiviCare_clinic_admin"
PATIENT = "kiviCare_patient"
RECEPTIONIST = "kiviCare_receptionist"

SAMPLE_PHRASE = "put your unique phrase here"
KEY_CONSTANTS = tuple(
    f"{first}_{second}"
    for first in ("AUTH", "SECURE_AUTH", "LOGGED_IN", "NONCE", "SECRET")
    for second in ("KEY", "SALT")
)
# Browsers keep cookies to 4096 bytes; anything longer is not a WordPress cookie.
MAX_COOKIE_LENGTH = 4096
_EXPIRATION_RE = re.compile(rb"[0-9]{1,19}")


# -- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedInKeys:
    """The ``logged_in`` key and salt; ``None`` means "use the site option", as wp_salt does.

    Build it with :meth:`from_constants` from wp-config.php's constants so the sample-phrase and
    duplicate rules apply; pass ``key``/``salt`` directly only for values already vetted.
    """

    key: str | None = None
    salt: str | None = None

    @classmethod
    def from_constants(cls, constants: Mapping[str, Any]) -> LoggedInKeys:
        """Apply wp_salt('logged_in')'s choice to ``constants`` (name → value as PHP defines it).

        A constant is ignored when it is empty, equals the sample phrase, or has the same value
        as another of the ten ``*_KEY``/``*_SALT`` constants. ``SECRET_KEY`` stands in for a
        missing ``LOGGED_IN_KEY``; ``SECRET_SALT`` never applies to ``logged_in``.
        """
        seen: dict[str, int] = {}
        for name in KEY_CONSTANTS:
            value = constants.get(name)
            if value is not None:
                text = _php_string(value)
                seen[text] = seen.get(text, 0) + 1

        def usable(name: str) -> str | None:
            value = constants.get(name)
            if value is None:
                return None
            text = _php_string(value)
            if not text or text == "0" or text == SAMPLE_PHRASE or seen.get(text, 0) > 1:
                return None
            return text

        return cls(
            key=usable("LOGGED_IN_KEY") or usable("SECRET_KEY"), salt=usable("LOGGED_IN_SALT")
        )

    @classmethod
    def from_settings(cls, wordpress: Any) -> LoggedInKeys:
        """From ``Settings.wordpress``: its eight ``*_key``/``*_salt`` fields, empty = undefined."""
        constants = {}
        for name in KEY_CONSTANTS:
            value = getattr(wordpress, name.lower(), "")
            if value:
                constants[name] = value
        return cls.from_constants(constants)

    def resolve(self, site_options: Mapping[str, str]) -> bytes | None:
        """``LOGGED_IN_KEY . LOGGED_IN_SALT`` with site-option fallbacks; None when unknown."""
        key = self.key or _php_string(site_options.get("logged_in_key")) or None
        salt = self.salt or _php_string(site_options.get("logged_in_salt")) or None
        if key is None or salt is None:
            return None
        return (key + salt).encode("utf-8")

    def __repr__(self) -> str:  # never print secrets
        return (
            f"LoggedInKeys(key={'set' if self.key else None}, salt={'set' if self.salt else None})"
        )


def _php_string(value: Any) -> str:
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    return str(value)


def cookie_hash_for(site_url: str) -> str:
    """WordPress's ``COOKIEHASH``: md5 of the ``siteurl`` option exactly as stored."""
    return hashlib.md5(site_url.encode("utf-8")).hexdigest() if site_url else ""  # noqa: S324


def site_cookie_hash(conn: sa.Connection, schema: SiteSchema, wp_siteurl: str | None = None) -> str:
    """``COOKIEHASH`` as WordPress derives it when wp-config.php does not define it.

    ``WP_SITEURL`` (if wp-config.php defines it) overrides the option, without a trailing
    slash (``_config_wp_siteurl``); otherwise the stored ``siteurl`` option is hashed as is.
    """
    if wp_siteurl:
        return cookie_hash_for(wp_siteurl.rstrip("/\\"))
    value = _options(conn, schema, ["siteurl"]).get("siteurl")
    return cookie_hash_for(_php_string(value))


def logged_in_cookie_name(cookie_hash: str) -> str:
    return "wordpress_logged_in_" + cookie_hash


# -- users -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WpUser:
    id: int
    login: str
    email: str
    display_name: str
    roles: frozenset[str]

    @property
    def is_administrator(self) -> bool:
        return ADMINISTRATOR in self.roles


def _first_meta(conn: sa.Connection, schema: SiteSchema, user_id: int, key: str) -> Any:
    """``get_user_meta($id, $key, true)``: first row by umeta_id, exact key; None if none."""
    return UserMeta(schema).get(conn, user_id, key)


def _options(conn: sa.Connection, schema: SiteSchema, names: Iterable[str]) -> dict[str, Any]:
    opts = schema.options
    rows = conn.execute(
        sa.select(opts.c.option_name, opts.c.option_value).where(
            opts.c.option_name.in_(list(names))
        )
    )
    return {name: maybe_unserialize(value) for name, value in rows}


def _registered_roles(conn: sa.Connection, schema: SiteSchema) -> frozenset[str] | None:
    """Role slugs registered on the blog (``{blog_prefix}user_roles``); None if unreadable."""
    name = schema.names.blog_prefix + "user_roles"
    value = _options(conn, schema, [name]).get(name)
    if isinstance(value, dict):
        return frozenset(str(k) for k in value)
    return None


def roles_from_capabilities(capabilities: Any, registered: frozenset[str] | None) -> frozenset[str]:
    """Roles as ``WP_User::get_role_caps`` finds them: capability keys that are registered roles.

    Without the role registry (never on a working site) keys with a true value are taken.
    """
    if isinstance(capabilities, list):
        capabilities = dict(enumerate(capabilities))
    if not isinstance(capabilities, dict):
        return frozenset()
    if registered is None:
        return frozenset(str(k) for k, v in capabilities.items() if v)
    return frozenset(str(k) for k in capabilities if str(k) in registered)


def user_roles(conn: sa.Connection, schema: SiteSchema, user_id: int) -> frozenset[str]:
    caps = _first_meta(conn, schema, user_id, schema.names.capabilities_key)
    return roles_from_capabilities(caps, _registered_roles(conn, schema))


def load_user(conn: sa.Connection, schema: SiteSchema, user_id: int) -> WpUser | None:
    users = schema.users
    row = conn.execute(
        sa.select(users.c.ID, users.c.user_login, users.c.user_email, users.c.display_name).where(
            users.c["ID"] == user_id
        )
    ).first()
    if row is None:
        return None
    return WpUser(
        id=int(row[0]),
        login=row[1],
        email=row[2],
        display_name=row[3],
        roles=user_roles(conn, schema, int(row[0])),
    )


# -- cookie validation -----------------------------------------------------------------------


class _Rejected(Exception):
    """Internal: why a cookie was refused; caught in ``validate``."""


def _live_session(sessions: Any, verifier: str, now: int) -> bool:
    """``WP_User_Meta_Session_Tokens::get_session`` + ``is_still_valid``."""
    if not isinstance(sessions, dict):
        return False
    session = sessions.get(verifier)
    if isinstance(session, bool):
        return False
    if isinstance(session, int | float):  # legacy shape: the expiration itself
        expiration: Any = session
    elif isinstance(session, dict):
        expiration = session.get("expiration")
    else:
        return False
    if isinstance(expiration, str):
        try:
            expiration = float(expiration.strip())
        except ValueError:
            return False
    if isinstance(expiration, bool) or not isinstance(expiration, int | float):
        return False
    return expiration >= now


class CookieValidator:
    """Validates ``wordpress_logged_in_*`` cookie values against the WordPress database."""

    def __init__(
        self,
        engine: sa.Engine,
        schema: SiteSchema,
        keys: LoggedInKeys,
        cookie_hash: str,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._schema = schema
        self._keys = keys
        self._clock = clock
        self.cookie_hash = cookie_hash
        self.cookie_name = logged_in_cookie_name(cookie_hash)

    def validate(
        self, cookie_value: str | None, conn: sa.Connection | None = None
    ) -> WpUser | None:
        """The logged-in user for a cookie value as the browser sent it, or None.

        ``cookie_value`` is the raw (URL-encoded) value; it is URL-decoded as PHP fills
        ``$_COOKIE``. Never raises for bad input; the reason for a refusal is logged at INFO.
        """
        try:
            if conn is not None:
                return self._validate(conn, cookie_value)
            with self._engine.connect() as own:
                return self._validate(own, cookie_value)
        except _Rejected as why:
            log.info("logged_in cookie rejected: %s", why)
            return None

    def _validate(self, conn: sa.Connection, cookie_value: str | None) -> WpUser:
        if not isinstance(cookie_value, str) or not cookie_value:
            raise _Rejected("empty")
        if len(cookie_value) > MAX_COOKIE_LENGTH:
            raise _Rejected("too long")
        try:
            raw = unquote_to_bytes(cookie_value.replace("+", " "))
        except (TypeError, ValueError) as err:
            raise _Rejected("not URL-decodable") from err
        parts = raw.split(b"|")
        if len(parts) != 4:
            raise _Rejected(f"malformed ({len(parts)} fields instead of 4)")
        login_b, expiration_b, token_b, mac_b = parts
        if not _EXPIRATION_RE.fullmatch(expiration_b):
            raise _Rejected("malformed expiration")
        now = int(self._clock.time())
        if int(expiration_b) < now:
            raise _Rejected("expired")
        try:
            login = login_b.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Rejected("login is not UTF-8") from err

        users = self._schema.users
        row = conn.execute(
            sa.select(users.c.ID, users.c.user_pass).where(users.c.user_login == login).limit(1)
        ).first()
        if row is None:
            raise _Rejected("unknown user")
        user_id, user_pass = int(row[0]), row[1] or ""

        secret = self._keys.resolve(
            _options(conn, self._schema, ["logged_in_key", "logged_in_salt"])
        )
        if secret is None:
            raise _Rejected("no logged_in key/salt configured or stored in the site options")
        pass_frag = user_pass.encode("utf-8")[8:12]
        key = hmac.new(
            secret,
            b"|".join([login_b, pass_frag, expiration_b, token_b]),
            hashlib.md5,
        ).hexdigest()
        expected = hmac.new(
            key.encode("ascii"), b"|".join([login_b, expiration_b, token_b]), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected.encode("ascii"), mac_b):
            raise _Rejected(f"bad hash for user {user_id}")

        verifier = hashlib.sha256(token_b).hexdigest()
        sessions = _first_meta(conn, self._schema, user_id, "session_tokens")
        if not _live_session(sessions, verifier, now):
            raise _Rejected(f"no live session for user {user_id}")

        user = load_user(conn, self._schema, user_id)
        if user is None:  # deleted between the two reads
            raise _Rejected("unknown user")
        return user


# -- authorisation ---------------------------------------------------------------------------


def is_doctor(conn: sa.Connection, schema: SiteSchema, user_id: int) -> bool:
    """True when the user holds the ``kiviCare_doctor`` role on this blog."""
    return DOCTOR in user_roles(conn, schema, user_id)


def _doctors_of_clinic_admin(conn: sa.Connection, schema: SiteSchema, admin_id: int) -> set[int]:
    clinics, dcm = schema.clinics, schema.doctor_clinic_mappings
    if clinics is None or dcm is None:  # KiviCare not installed: no clinic administers anyone
        return set()
    rows = conn.execute(
        sa.select(dcm.c.doctor_id)
        .join(clinics, clinics.c.id == dcm.c.clinic_id)
        .where(clinics.c.clinic_admin_id == admin_id)
        .distinct()
    )
    return {int(r[0]) for r in rows}


def all_doctor_ids(conn: sa.Connection, schema: SiteSchema) -> set[int]:
    """Every user holding ``kiviCare_doctor`` on this blog."""
    um = schema.usermeta
    rows = conn.execute(
        sa.select(um.c.user_id, um.c.meta_key, um.c.meta_value)
        .where(um.c.meta_key == schema.names.capabilities_key)
        .where(um.c.meta_value.like(f"%{DOCTOR}%"))
        .order_by(um.c.user_id, um.c.umeta_id)
    )
    registered = _registered_roles(conn, schema)
    found: dict[int, bool] = {}
    for user_id, meta_key, value in rows:
        if meta_key != schema.names.capabilities_key:  # SQL matched case-insensitively
            continue
        if int(user_id) not in found:  # first row per user, as get_user_meta(..., true)
            roles = roles_from_capabilities(maybe_unserialize(value), registered)
            found[int(user_id)] = DOCTOR in roles
    return {uid for uid, doctor in found.items() if doctor}


def manageable_doctor_ids(conn: sa.Connection, schema: SiteSchema, user: WpUser) -> set[int]:
    """Doctors whose Google connection ``user`` may manage (see :func:`can_manage_doctor`)."""
    if ADMINISTRATOR in user.roles:
        return all_doctor_ids(conn, schema)
    ids: set[int] = set()
    if DOCTOR in user.roles:
        ids.add(user.id)
    if CLINIC_ADMIN in user.roles:
        ids |= _doctors_of_clinic_admin(conn, schema, user.id)
    return ids


def can_manage_doctor(
    conn: sa.Connection, schema: SiteSchema, user: WpUser, doctor_id: int
) -> bool:
    """``administrator``: anyone; ``kiviCare_doctor``: only themselves; ``kiviCare_clinic_admin``:
    doctors mapped (``kc_doctor_clinic_mappings``) to a clinic whose ``clinic_admin_id`` is them.
    Everyone else: nobody. Roles add up for users holding several."""
    if ADMINISTRATOR in user.roles:
        return True
    if DOCTOR in user.roles and doctor_id == user.id:
        return True
    if CLINIC_ADMIN in user.roles:
        return doctor_id in _doctors_of_clinic_admin(conn, schema, user.id)
    return False
