"""Fixtures for the web tests; the clinic they build lives in ``web_clinic``."""

from __future__ import annotations

from web_clinic import clinic_factory

__all__ = ["clinic_factory"]
