"""Injected failures, latency and the per-user sliding-window quota.

Methods are named by discovery id (``calendar.events.insert``) or ``oauth2.token`` /
``oauth2.revoke``; ``"*"`` matches every method. Randomness comes from one seeded RNG so a
probability-driven test is repeatable.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from dataclasses import dataclass

from sidecar.emulator import errors


@dataclass
class ProbabilityRule:
    kind: str
    probability: float
    remaining: int | None


class Faults:
    def __init__(self, seed: int, latency_seconds: float, quota_per_minute: int) -> None:
        self.rng = random.Random(seed)
        self.sequences: dict[str, deque[str | None]] = defaultdict(deque)
        self.rules: dict[str, list[ProbabilityRule]] = defaultdict(list)
        self.latency: dict[str, float] = {"*": latency_seconds}
        self.quota_per_minute = quota_per_minute
        self.windows: dict[str, deque[float]] = defaultdict(deque)

    def inject_sequence(self, method: str, kinds: list[str | None]) -> None:
        """The next calls of ``method`` fail with these kinds in order (None: let one through)."""
        for kind in kinds:
            if kind is not None:
                errors.fault(kind)  # validate the name now, not at call time
        self.sequences[method].extend(kinds)

    def inject_probability(self, method: str, kind: str, probability: float,
                           count: int | None = None) -> None:
        errors.fault(kind)
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        self.rules[method].append(ProbabilityRule(kind, probability, count))

    def clear(self) -> None:
        self.sequences.clear()
        self.rules.clear()

    def next_fault(self, method: str) -> str | None:
        """The fault kind this call must fail with, or None."""
        for key in (method, "*"):
            seq = self.sequences.get(key)
            if seq:
                return seq.popleft()
        for key in (method, "*"):
            for rule in list(self.rules.get(key, [])):
                if rule.remaining is not None and rule.remaining <= 0:
                    self.rules[key].remove(rule)
                    continue
                if self.rng.random() < rule.probability:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule.kind
        return None

    def latency_for(self, method: str) -> float:
        return self.latency.get(method, self.latency.get("*", 0.0))

    def over_quota(self, user: str, now: float) -> bool:
        """Sliding one-minute window per user; a call that is let through is counted."""
        window = self.windows[user]
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.quota_per_minute:
            return True
        window.append(now)
        return False
