"""WordPress user meta and options, read and written the way WordPress itself does.

Every call takes a SQLAlchemy ``Connection``; the caller owns the transaction.

User meta (``get_user_meta`` / ``update_user_meta`` semantics)
- A key may have several rows. ``get`` returns the first by ``umeta_id`` (what
  ``get_user_meta($id, $key, true)`` returns), ``get_all`` every value in ``umeta_id`` order.
- Reads match the key exactly, like WordPress's PHP-side meta cache. Writes and deletes select
  rows by SQL equality, as WordPress's own queries do (so on MariaDB, with its case-insensitive
  collation, ``set`` and ``delete`` also touch rows whose key differs only in case).
- ``set`` updates *every* row of the key when one exists, else inserts one row.
- Values are stored with :func:`wp_schema.phpvalue.maybe_serialize` and read back with
  ``maybe_unserialize``: ints come back as strings, dicts/lists as dicts/lists. ``None`` is
  stored as SQL NULL (``$wpdb`` writes NULL for null) and read back as ``None``.
- Slashes: WordPress runs ``wp_unslash`` on the value handed to ``update_user_meta``; ``set``
  stores exactly what it is given, i.e. it behaves like
  ``update_user_meta($id, $key, wp_slash($value))``. Backslashes survive unchanged.

Options (``get_option`` / ``update_option`` / ``delete_option``)
- ``autoload`` is ``'yes'``/``'no'`` (WordPress 6.1); ``True``/``False`` are accepted. It is set
  when the option is created; on an existing option it is changed only when passed explicitly.
- ``set`` is a single atomic upsert (``ON DUPLICATE KEY UPDATE`` / ``ON CONFLICT``), like
  ``add_option``. ``None`` is stored as ``''`` (``option_value`` is NOT NULL).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from wp_schema.phpvalue import maybe_serialize, maybe_unserialize
from wp_schema.reflect import SchemaError, SiteSchema

__all__ = ["Options", "UserMeta"]

_CHUNK = 500  # ids per IN (...) list; keeps SQLite below its bound-parameter limit


class _Unset:
    def __repr__(self) -> str:
        return "'yes'"


_AUTOLOAD_UNSET: Any = _Unset()


def _table(schema: SiteSchema, key: str) -> sa.Table:
    table = schema.tables.get(key)
    if table is None:
        raise SchemaError([f"no table {getattr(schema.names, key)} — is $table_prefix right?"])
    return table


def _user_id(user_id: int) -> int:
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
        raise ValueError(f"user id must be a positive integer, not {user_id!r}")
    return user_id


def _meta_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"meta key must be a non-empty string, not {key!r}")
    return key


class UserMeta:
    """``{base_prefix}usermeta`` accessors."""

    def __init__(self, schema: SiteSchema) -> None:
        self.table = _table(schema, "usermeta")

    def get(self, conn: sa.Connection, user_id: int, key: str, default: Any = None) -> Any:
        """First value of ``key`` (by ``umeta_id``), unserialized; ``default`` if there is none."""
        values = self.get_all(conn, user_id, key)
        return values[0] if values else default

    def get_all(self, conn: sa.Connection, user_id: int, key: str) -> list[Any]:
        t = self.table
        rows = conn.execute(
            sa.select(t.c.meta_key, t.c.meta_value)
            .where(t.c.user_id == _user_id(user_id), t.c.meta_key == _meta_key(key))
            .order_by(t.c.umeta_id)
        )
        return [maybe_unserialize(value) for meta_key, value in rows if meta_key == key]

    def all_keys(self, conn: sa.Connection, user_id: int) -> dict[str, list[Any]]:
        """Every meta row of a user: key → values in ``umeta_id`` order."""
        t = self.table
        out: dict[str, list[Any]] = {}
        rows = conn.execute(
            sa.select(t.c.meta_key, t.c.meta_value)
            .where(t.c.user_id == _user_id(user_id))
            .order_by(t.c.umeta_id)
        )
        for meta_key, value in rows:
            out.setdefault(meta_key, []).append(maybe_unserialize(value))
        return out

    def get_many(
        self, conn: sa.Connection, user_ids: Iterable[int], keys: Iterable[str]
    ) -> dict[int, dict[str, Any]]:
        """First value of each key for each user, in one query per 500 users.

        Returns ``{user_id: {key: value}}``; users and keys without rows are left out.
        """
        ids = sorted({_user_id(u) for u in user_ids})
        wanted = {_meta_key(k) for k in keys}
        out: dict[int, dict[str, Any]] = {}
        if not ids or not wanted:
            return out
        t = self.table
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows = conn.execute(
                sa.select(t.c.user_id, t.c.meta_key, t.c.meta_value)
                .where(t.c.user_id.in_(chunk), t.c.meta_key.in_(sorted(wanted)))
                .order_by(t.c.umeta_id)
            )
            for uid, meta_key, value in rows:
                if meta_key not in wanted:  # case-insensitive SQL match, exact PHP lookup
                    continue
                per_user = out.setdefault(int(uid), {})
                if meta_key not in per_user:
                    per_user[meta_key] = maybe_unserialize(value)
        return out

    def set(self, conn: sa.Connection, user_id: int, key: str, value: Any) -> None:
        """``update_user_meta``: update all rows of ``key`` or insert the first one."""
        t = self.table
        uid, key = _user_id(user_id), _meta_key(key)
        stored = None if value is None else maybe_serialize(value)
        exists = conn.execute(
            sa.select(t.c.umeta_id).where(t.c.user_id == uid, t.c.meta_key == key).limit(1)
        ).first()
        if exists is None:
            conn.execute(t.insert().values(user_id=uid, meta_key=key, meta_value=stored))
        else:
            conn.execute(
                t.update().where(t.c.user_id == uid, t.c.meta_key == key).values(meta_value=stored)
            )

    def add(self, conn: sa.Connection, user_id: int, key: str, value: Any) -> int:
        """``add_user_meta`` (not unique): always inserts a row; returns its ``umeta_id``."""
        t = self.table
        stored = None if value is None else maybe_serialize(value)
        result = conn.execute(
            t.insert().values(user_id=_user_id(user_id), meta_key=_meta_key(key), meta_value=stored)
        )
        return int(result.inserted_primary_key[0])

    def delete(self, conn: sa.Connection, user_id: int, key: str) -> int:
        """``delete_user_meta`` without a value: removes every row of ``key``; returns count."""
        t = self.table
        result = conn.execute(
            t.delete().where(t.c.user_id == _user_id(user_id), t.c.meta_key == _meta_key(key))
        )
        return int(result.rowcount or 0)


def _autoload_value(autoload: Any) -> str:
    if autoload is True:
        return "yes"
    if autoload is False:
        return "no"
    if autoload in ("yes", "no"):
        return str(autoload)
    raise ValueError(f"autoload must be 'yes', 'no', True or False, not {autoload!r}")


class Options:
    """``{blog_prefix}options`` accessors."""

    def __init__(self, schema: SiteSchema) -> None:
        self.table = _table(schema, "options")
        self.dialect = schema.dialect

    def get(self, conn: sa.Connection, name: str, default: Any = None) -> Any:
        t = self.table
        row = conn.execute(
            sa.select(t.c.option_value).where(t.c.option_name == _meta_key(name))
        ).first()
        return default if row is None else maybe_unserialize(row[0])

    def get_autoload(self, conn: sa.Connection, name: str) -> str | None:
        t = self.table
        return conn.execute(
            sa.select(t.c.autoload).where(t.c.option_name == _meta_key(name))
        ).scalar_one_or_none()

    def set(
        self, conn: sa.Connection, name: str, value: Any, autoload: Any = _AUTOLOAD_UNSET
    ) -> None:
        """``update_option`` / ``add_option`` as one atomic upsert."""
        t = self.table
        name = _meta_key(name)
        if len(name) > 191:
            raise ValueError("option names are limited to 191 characters")
        explicit = autoload is not _AUTOLOAD_UNSET
        auto = _autoload_value(autoload) if explicit else "yes"
        values = {"option_name": name, "option_value": maybe_serialize(value), "autoload": auto}
        update_cols = ["option_value", *(["autoload"] if explicit else [])]
        if self.dialect in ("mysql", "mariadb"):
            stmt = mysql_dialect.insert(t).values(**values)
            stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update_cols})
        elif self.dialect == "sqlite":
            sstmt = sqlite_dialect.insert(t).values(**values)
            stmt = sstmt.on_conflict_do_update(
                index_elements=[t.c.option_name],
                set_={c: sstmt.excluded[c] for c in update_cols},
            )
        else:  # pragma: no cover - create_site/reflect only support these two
            raise ValueError(f"unsupported database {self.dialect!r}")
        conn.execute(stmt)

    def delete(self, conn: sa.Connection, name: str) -> bool:
        t = self.table
        result = conn.execute(t.delete().where(t.c.option_name == _meta_key(name)))
        return bool(result.rowcount)
