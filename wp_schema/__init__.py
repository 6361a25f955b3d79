"""How WordPress and KiviCare store things: table names, reflection, PHP values, meta, DDL.

This package knows *storage* and nothing about sidecar behaviour.
"""
