"""Table and meta-key names of one WordPress site (single site or one blog of a multisite).

WordPress keeps ``users`` and ``usermeta`` on the *base* prefix (shared by every blog of a
network) while ``options`` and plugin tables such as KiviCare's ``kc_*`` live on the *blog*
prefix: ``wp_`` for blog 1 and ``wp_<N>_`` for blog N>1. Role capabilities are stored in user meta
under ``{blog_prefix}capabilities``. Everything that needs a table name asks this class so the
rule lives in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PREFIX_RE = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class TableNames:
    """Names for ``prefix`` (WordPress ``$table_prefix``) and ``blog_id`` (1 = main site)."""

    prefix: str = "wp_"
    blog_id: int = 1

    def __post_init__(self) -> None:
        # WordPress refuses a $table_prefix with anything but letters, digits and underscores
        # (wpdb::set_prefix: "Invalid database prefix").
        if not isinstance(self.prefix, str) or not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(
                f"invalid table prefix {self.prefix!r}: WordPress allows only letters, digits "
                "and underscores (check $table_prefix in wp-config.php)"
            )
        if isinstance(self.blog_id, bool) or not isinstance(self.blog_id, int) or self.blog_id < 1:
            raise ValueError(f"invalid blog id {self.blog_id!r}: must be an integer >= 1")

    @property
    def base_prefix(self) -> str:
        return self.prefix

    @property
    def blog_prefix(self) -> str:
        if self.blog_id == 1:
            return self.prefix
        return f"{self.prefix}{self.blog_id}_"

    @property
    def is_multisite_blog(self) -> bool:
        """True for blog N>1, which only exists on a multisite network."""
        return self.blog_id != 1

    @property
    def users(self) -> str:
        return self.prefix + "users"

    @property
    def usermeta(self) -> str:
        return self.prefix + "usermeta"

    @property
    def options(self) -> str:
        return self.blog_prefix + "options"

    @property
    def capabilities_key(self) -> str:
        """User meta key holding the serialized role array for this blog."""
        return self.blog_prefix + "capabilities"

    @property
    def user_level_key(self) -> str:
        return self.blog_prefix + "user_level"

    def kc(self, name: str) -> str:
        """KiviCare table: ``kc("appointments")`` → ``wp_kc_appointments`` (``wp_3_kc_…``)."""
        return self.blog_prefix + "kc_" + _checked(name)

    def sidecar(self, name: str) -> str:
        """The sidecar's own table: ``sidecar("state")`` → ``{blog_prefix}kcsc_state``."""
        return self.blog_prefix + "kcsc_" + _checked(name)


def _checked(name: str) -> str:
    if not _PREFIX_RE.fullmatch(name):
        raise ValueError(f"invalid table name part {name!r}: use letters, digits, underscores")
    return name
