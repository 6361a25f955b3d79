"""How WordPress and KiviCare store things: table names, reflection, PHP values, meta, DDL.

This package knows *storage* and nothing about sidecar behaviour.

- ``names.TableNames``: base/blog prefixes and every table or meta-key name derived from them.
- ``phpvalue``: WordPress's ``maybe_serialize`` / ``maybe_unserialize`` / ``is_serialized``.
- ``ddl.create_site``: reference DDL for tests, demo and benchmark (MariaDB and SQLite).
- ``reflect.SiteSchema``: the reflected tables of a live site and detected schema drift.
- ``meta.UserMeta`` / ``meta.Options``: WordPress user meta and options semantics.
"""
