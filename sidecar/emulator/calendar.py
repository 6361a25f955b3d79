"""Calendar data (placeholder until the Calendar part lands)."""

from __future__ import annotations

from typing import Any


class CalendarStore:
    def __init__(self, config: Any, clock: Any, push: Any) -> None:
        pass

    def resolve_due_conferences(self) -> None:
        pass

    def dump(self) -> dict[str, Any]:
        return {}
