"""Routes (placeholder until the Calendar part lands)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("emulator_control_routes", __name__)
