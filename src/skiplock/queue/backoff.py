"""Retry delays: exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base_s * 2**(attempt-1)`` capped at ``max_s``, spread by ±``jitter`` (a fraction)."""

    base_s: float = 1.0
    max_s: float = 3600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.max_s < self.base_s or not 0 <= self.jitter < 1:
            raise ValueError("Backoff needs 0 <= base_s <= max_s and 0 <= jitter < 1")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 62)
        raw = min(self.base_s * 2.0**exponent, self.max_s)
        spread = raw * self.jitter * (2.0 * rand() - 1.0)
        return max(0.0, raw + spread)
