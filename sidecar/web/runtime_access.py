"""The one accessor views use to reach the application's :class:`sidecar.runtime.Runtime`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from sidecar.runtime import Runtime


def runtime() -> Runtime:
    return current_app.extensions["kcsc_runtime"]  # type: ignore[no-any-return]
