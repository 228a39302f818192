"""Cron expressions: next fire times in a schedule's timezone, stored in UTC, and misfire rules.

Parsing and iteration are croniter's (maintained, and the one that takes an optional *leading*
seconds field). On top of it, three rules:
- a local time skipped by a daylight-saving jump fires once, at the next valid instant (croniter's);
- a schedule that fires at most once an hour (hourly, daily …) fires a local time that happens
  twice (the repeated hour in autumn) once, at its first occurrence;
- a sub-hourly schedule (every 5 minutes, every few seconds) fires through the repeated hour as
  it does through any other, as cron does with wildcard schedules: no hour-long silence.
An expression that can never fire (``0 0 30 2 *``) is refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
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
    sub_hourly: bool = field(init=False, default=False)  # fires more than once an hour

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
            iterator = self._iterator(datetime(2000, 1, 1, tzinfo=self.zone))
        except (CroniterError, ValueError, KeyError) as exc:
            raise CronError(str(exc) or "invalid cron expression") from exc
        try:
            iterator.get_next(datetime)  # croniter searches far enough to see February 29
        except (CroniterError, ValueError) as exc:
            raise CronError(f"{expression!r} never fires (no date matches it)") from exc
        # Fires more than once an hour: more than one minute, or more than one second, matches.
        minutes, seconds = iterator.expanded[0], iterator.expanded[5] if self.has_seconds else [0]
        object.__setattr__(
            self, "sub_hourly", len(minutes) > 1 or "*" in minutes or len(seconds) > 1 or "*" in seconds
        )

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
            if self._repeated(candidate):
                continue  # the repeated hour: this wall time already fired at its first occurrence
            return candidate.astimezone(UTC)

    def _repeated(self, candidate: datetime) -> bool:
        """A wall time's second occurrence in a fall-back hour, which only sub-hourly schedules fire."""
        if self.sub_hourly or candidate.fold == 0:
            return False
        return candidate.replace(fold=0).utcoffset() != candidate.utcoffset()

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
            if self._repeated(candidate):
                continue  # a repeated hour's second occurrence does not fire again
            at = candidate.astimezone(UTC)
            if at > moment:
                continue
            return at if at >= not_before else None


#: Missed ticks are counted up to this many (an every-second schedule down for a day would be 86,400).
MISSED_COUNT_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Decision:
    fire: list[datetime]  # scheduled_for of each job to create
    next_run_at: datetime
    skipped: int = 0  # due ticks that will never fire (misfires), at most MISSED_COUNT_LIMIT


def decide(
    cron: Cron,
    next_run_at: datetime,
    now: datetime,
    *,
    misfire: Misfire = Misfire.SKIP,
    grace_s: float = 60.0,
    cap: int = 100,
) -> Decision:
    """What a due schedule does at ``now``: which ticks fire, which are skipped, and its next run.

    On time (the due tick within the grace period) it fires that tick. After downtime, ``skip``
    fires only the latest missed tick and only within the grace period; ``catch_up`` fires each
    missed tick, oldest first, at most ``cap`` of them. Never more than ``cap`` jobs at once.
    Every due tick that does not fire is counted in ``skipped``.
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
        fire = ticks
    else:
        latest = cron.latest_at_or_before(now, next_run_at)
        on_time = latest is not None and (now - latest).total_seconds() <= grace_s
        fire = [latest] if on_time and latest is not None else []
    due = _count_due(cron, next_run_at, now, len(fire) + MISSED_COUNT_LIMIT)
    return Decision(fire, following, skipped=min(max(due - len(fire), 0), MISSED_COUNT_LIMIT))


def _count_due(cron: Cron, first: datetime, now: datetime, limit: int) -> int:
    """The ticks from ``first`` (itself one) to ``now``, counted up to ``limit``."""
    count, current = 0, first
    while current <= now and count < limit:
        count += 1
        current = cron.next_after(current)
    return count
