"""Cron expressions: next fire times in a schedule's timezone, stored in UTC, and misfire rules.

Parsing and iteration are croniter's (maintained, and the one that takes an optional *leading*
seconds field). On top of it, two rules:
- a local time skipped by a daylight-saving jump fires once, at the next valid instant (croniter's);
- a local time that happens twice (the repeated hour in autumn) fires once, at its first occurrence.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


class CronError(ValueError):
    """An expression or timezone that cannot be used."""


class Misfire(enum.StrEnum):
    SKIP = "skip"  # after downtime: the latest missed tick once if within the grace period, else none
    CATCH_UP = "catch_up"  # after downtime: every missed tick, up to a cap


@dataclass(frozen=True, slots=True)
class Cron:
    expression: str
    timezone: str

    def __post_init__(self) -> None:
        try:
            self.zone  # noqa: B018  (validates)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CronError(f"unknown timezone {self.timezone!r}") from exc
        expression = self.expression.strip()
        fields = expression.split()
        if expression.startswith("@"):
            if expression not in ALIASES:
                raise CronError(f"unknown alias {expression!r}; use one of {', '.join(sorted(ALIASES))}")
        elif len(fields) not in (5, 6):
            raise CronError(f"expected 5 fields (or 6 with leading seconds), got {len(fields)}")
        try:
            self._iterator(datetime(2000, 1, 1, tzinfo=self.zone))
        except (CroniterError, ValueError, KeyError) as exc:
            raise CronError(str(exc) or "invalid cron expression") from exc

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def has_seconds(self) -> bool:
        return not self.expression.strip().startswith("@") and len(self.expression.split()) == 6

    def _iterator(self, start: datetime) -> croniter:
        return croniter(self.expression.strip(), start, second_at_beginning=self.has_seconds)

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (aware), in UTC."""
        iterator = self._iterator(after.astimezone(self.zone))
        while True:
            candidate: datetime = iterator.get_next(datetime)
            if candidate.fold == 1 and candidate.replace(fold=0).utcoffset() != candidate.utcoffset():
                continue  # the repeated hour: this wall time already fired at its first occurrence
            return candidate.astimezone(UTC)

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        times, current = [], after
        for _ in range(count):
            current = self.next_after(current)
            times.append(current)
        return times

    def latest_at_or_before(self, moment: datetime, not_before: datetime) -> datetime | None:
        """The last fire time in [not_before, moment], if any (walking back from ``moment``)."""
        iterator = self._iterator((moment + timedelta(seconds=1)).astimezone(self.zone))
        while True:
            candidate: datetime = iterator.get_prev(datetime)
            if candidate.fold == 1 and candidate.replace(fold=0).utcoffset() != candidate.utcoffset():
                continue  # a repeated hour's second occurrence never fires
            at = candidate.astimezone(UTC)
            if at > moment:
                continue
            return at if at >= not_before else None


@dataclass(frozen=True, slots=True)
class Decision:
    fire: list[datetime]  # scheduled_for of each job to create
    next_run_at: datetime


def decide(
    cron: Cron,
    next_run_at: datetime,
    now: datetime,
    *,
    misfire: Misfire = Misfire.SKIP,
    grace_s: float = 60.0,
    cap: int = 100,
) -> Decision:
    """What a due schedule does at ``now``: which ticks fire, and its next run.

    On time (the due tick within the grace period) it fires that tick. After downtime, ``skip``
    fires only the latest missed tick and only within the grace period; ``catch_up`` fires each
    missed tick, oldest first, at most ``cap`` of them. Never more than ``cap`` jobs at once.
    """
    if next_run_at > now:
        return Decision([], next_run_at)
    following = cron.next_after(now)
    if misfire is Misfire.CATCH_UP:
        ticks, current = [next_run_at], next_run_at
        while len(ticks) < cap:
            current = cron.next_after(current)
            if current > now:
                break
            ticks.append(current)
        return Decision(ticks, following)
    latest = cron.latest_at_or_before(now, next_run_at)
    if latest is not None and (now - latest).total_seconds() <= grace_s:
        return Decision([latest], following)
    return Decision([], following)
