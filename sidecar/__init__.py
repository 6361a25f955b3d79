"""kc-meet-sidecar: Google Calendar / Meet work for a KiviCare WordPress site, beside PHP."""

__version__ = "0.1.0"
