"""Push channels (placeholder until the Calendar part lands)."""

from __future__ import annotations

from typing import Any


class PushHub:
    def __init__(self, config: Any, clock: Any, lock: Any, rng: Any) -> None:
        self.drop_probability = 0.0
        self.duplicate_probability = 0.0

    def deliver_pending(self) -> int:
        return 0

    def dump(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass
