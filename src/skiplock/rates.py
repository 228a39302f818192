"""A rate limit's text: ``"<count>/<unit>"`` (``"100/minute"``, ``"5/second"``; units ``second``,
``minute``, ``hour``, ``day``): at most ``count`` starts of a queue's jobs in any window of one
unit, across every process (a sliding window, not buckets). Outside the queue package: the
settings read rates too (SKIPLOCK_QUEUES).
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: The rate's units, in seconds.
UNITS: dict[str, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
#: Kept below the schema's bounds (migration 0017): the claim keeps one start per place of a rate.
MAX_RATE = 10_000

_RATE = re.compile(r"([0-9]+)/([a-z]+)")


class Rate(NamedTuple):
    limit: int  # starts per period
    period_s: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"100/minute"`` → ``Rate(100, 60.0)``; anything else is a ValueError saying why."""
        match = _RATE.fullmatch(text.strip().lower())
        if match is None or match[2] not in UNITS:
            raise ValueError(f"a rate is '<count>/<unit>', unit one of {', '.join(UNITS)}: not {text!r}")
        count = int(match[1])
        if not 1 <= count <= MAX_RATE:
            raise ValueError(f"a rate's count must be between 1 and {MAX_RATE}: not {text!r}")
        return cls(count, UNITS[match[2]])

    def __str__(self) -> str:
        unit = next((name for name, seconds in UNITS.items() if seconds == self.period_s), None)
        return f"{self.limit}/{unit}" if unit else f"{self.limit}/{self.period_s:g}s"
