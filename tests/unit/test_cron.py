"""Next fire times, daylight saving and misfire decisions: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiplock.queue.cron import Cron, CronError, Misfire, decide


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def test_ordinary_alias_and_seconds_expressions() -> None:
    assert Cron("*/15 * * * *", "UTC").upcoming(utc(2026, 1, 1, 10, 7), 3) == [
        utc(2026, 1, 1, 10, 15),
        utc(2026, 1, 1, 10, 30),
        utc(2026, 1, 1, 10, 45),
    ]
    assert Cron("@daily", "UTC").next_after(utc(2026, 1, 1, 10)) == utc(2026, 1, 2)
    assert Cron("@hourly", "Europe/Berlin").next_after(utc(2026, 1, 1, 10, 30)) == utc(2026, 1, 1, 11)
    assert Cron("*/20 * * * * *", "UTC").upcoming(utc(2026, 1, 1), 3) == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1),
    ]


def test_times_are_computed_in_the_schedules_timezone() -> None:
    # 09:00 in New York in January is 14:00 UTC
    assert Cron("0 9 * * *", "America/New_York").next_after(utc(2026, 1, 5)) == utc(2026, 1, 5, 14)


@pytest.mark.parametrize(
    ("tz", "after", "expected"),
    [
        # Berlin springs forward on 2026-03-29: 02:30 does not exist, it fires once at 03:00 (01:00 UTC)
        ("Europe/Berlin", utc(2026, 3, 28, 23), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]),
        # New York springs forward on 2026-03-08: 02:30 fires at 03:00 EDT (07:00 UTC)
        ("America/New_York", utc(2026, 3, 8, 5), [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]),
    ],
)
def test_a_skipped_local_time_fires_once_at_the_next_valid_instant(
    tz: str, after: datetime, expected: list[datetime]
) -> None:
    assert Cron("30 2 * * *", tz).upcoming(after, 2) == expected


@pytest.mark.parametrize(
    ("tz", "after", "first"),
    [
        # Berlin falls back on 2026-10-25: 02:30 happens twice; it fires at the first (00:30 UTC) only
        ("Europe/Berlin", utc(2026, 10, 24, 23), utc(2026, 10, 25, 0, 30)),
        # New York falls back on 2026-11-01: 01:30 happens twice; the first is 05:30 UTC
        ("America/New_York", utc(2026, 11, 1, 4), utc(2026, 11, 1, 5, 30)),
    ],
)
def test_a_repeated_local_time_fires_once(tz: str, after: datetime, first: datetime) -> None:
    expression = "30 2 * * *" if tz == "Europe/Berlin" else "30 1 * * *"
    fires = Cron(expression, tz).upcoming(after, 2)
    assert fires[0] == first
    assert fires[1] - fires[0] == timedelta(hours=25)  # the next day, not an hour later


def test_an_hourly_schedule_fires_once_per_local_hour_across_fall_back() -> None:
    fires = Cron("0 * * * *", "Europe/Berlin").upcoming(utc(2026, 10, 24, 22, 30), 4)
    # local 01:00, 02:00 (first), 03:00, 04:00: the repeated 02:00 does not fire again
    assert fires == [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]


@pytest.mark.parametrize(
    ("expression", "timezone", "words"),
    [
        ("61 * * * *", "UTC", "out of range"),
        ("* * *", "UTC", "5 fields"),
        ("* * * * * * *", "UTC", "5 fields"),
        ("@reboot", "UTC", "alias"),
        ("* * * * *", "Mars/Olympus", "timezone"),
        ("banana * * * *", "UTC", "not acceptable"),
    ],
)
def test_bad_expressions_and_timezones_name_the_reason(expression: str, timezone: str, words: str) -> None:
    with pytest.raises(CronError, match=words):
        Cron(expression, timezone)


def test_on_time_tick_fires_once_and_advances() -> None:
    cron = Cron("* * * * *", "UTC")
    decision = decide(cron, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 0, 0, 300))
    assert decision.fire == [utc(2026, 1, 1, 10, 0)]
    assert decision.next_run_at == utc(2026, 1, 1, 10, 1)


def test_skip_after_downtime_fires_the_latest_missed_tick_within_grace_or_nothing() -> None:
    cron = Cron("* * * * * *", "UTC")  # every second
    ten_ticks_later = utc(2026, 1, 1, 10, 0, 10, 500_000)
    decision = decide(cron, utc(2026, 1, 1, 10, 0, 1), ten_ticks_later, misfire=Misfire.SKIP)
    assert decision.fire == [utc(2026, 1, 1, 10, 0, 10)]
    assert decision.next_run_at == utc(2026, 1, 1, 10, 0, 11)
    daily = Cron("0 3 * * *", "UTC")
    late = decide(daily, utc(2026, 1, 1, 3), utc(2026, 1, 1, 5), misfire=Misfire.SKIP, grace_s=60)
    assert late.fire == []
    assert late.next_run_at == utc(2026, 1, 2, 3)


def test_catch_up_fires_every_missed_tick_up_to_the_cap() -> None:
    cron = Cron("* * * * * *", "UTC")
    start, now = utc(2026, 1, 1, 10, 0, 1), utc(2026, 1, 1, 10, 0, 10, 500_000)
    decision = decide(cron, start, now, misfire=Misfire.CATCH_UP, cap=100)
    assert decision.fire == [start + timedelta(seconds=n) for n in range(10)]
    capped = decide(cron, start, now, misfire=Misfire.CATCH_UP, cap=3)
    assert capped.fire == [start + timedelta(seconds=n) for n in range(3)]
    assert capped.next_run_at == utc(2026, 1, 1, 10, 0, 11)  # never a storm: the rest are dropped


def test_a_schedule_not_yet_due_does_nothing() -> None:
    decision = decide(Cron("@hourly", "UTC"), utc(2026, 1, 1, 11), utc(2026, 1, 1, 10, 59))
    assert decision.fire == []
    assert decision.next_run_at == utc(2026, 1, 1, 11)


MINUTE_FIELDS = st.sampled_from(["*", "*/5", "0", "15,45", "10-20"])
HOUR_FIELDS = st.sampled_from(["*", "*/3", "2", "9-17", "0,12"])
ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"])


@settings(max_examples=200, deadline=None)
@given(
    minute=MINUTE_FIELDS,
    hour=HOUR_FIELDS,
    zone=ZONES,
    after=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    ),
)
def test_next_fire_is_after_the_instant_and_matches_the_expression(
    minute: str, hour: str, zone: str, after: datetime
) -> None:
    cron = Cron(f"{minute} {hour} * * *", zone)
    fire = cron.next_after(after)
    assert fire > after
    local = fire.astimezone(cron.zone)
    # the local wall time matches, unless it was a skipped time moved to the next valid instant
    from croniter import croniter

    matches = croniter.match(f"{minute} {hour} * * *", local.replace(tzinfo=None))
    assert matches or local.dst() != (local - timedelta(hours=3)).dst()


FALL_BACK_NIGHT = [utc(2026, 10, 25, 0, 0) + timedelta(minutes=5 * n) for n in range(31)]  # to 02:30 UTC


def test_every_five_minutes_fires_through_the_fall_back_night_in_berlin() -> None:
    # Berlin falls back at 01:00 UTC on 2026-10-25: local 02:00-02:59 happens twice (00:00-01:59 UTC)
    cron = Cron("*/5 * * * *", "Europe/Berlin")
    assert cron.upcoming(utc(2026, 10, 24, 23, 59, 59), len(FALL_BACK_NIGHT)) == FALL_BACK_NIGHT


def test_a_scheduler_deciding_on_time_fires_every_tick_of_the_fall_back_night() -> None:
    cron = Cron("*/5 * * * *", "Europe/Berlin")
    fired, next_run = [], FALL_BACK_NIGHT[0]
    while next_run <= FALL_BACK_NIGHT[-1]:
        decision = decide(cron, next_run, next_run + timedelta(milliseconds=300))
        assert decision.skipped == 0
        fired += decision.fire
        next_run = decision.next_run_at
    assert fired == FALL_BACK_NIGHT


def test_every_ten_seconds_is_never_silent_in_the_repeated_hour() -> None:
    cron = Cron("*/10 * * * * *", "Europe/Berlin")
    start = utc(2026, 10, 25, 0, 59, 50)  # where the issue saw it fall silent until 02:00 UTC
    fires = cron.upcoming(start - timedelta(microseconds=1), 6 * 62 + 1)
    assert fires == [start + timedelta(seconds=10 * n) for n in range(6 * 62 + 1)]
    previous = cron.latest_at_or_before(utc(2026, 10, 25, 1, 30, 5), utc(2026, 10, 25))
    assert previous == utc(2026, 10, 25, 1, 30)  # a tick in the repeated hour, walking back too


def test_hourly_and_daily_keep_one_fire_per_local_time_at_fall_back() -> None:
    assert Cron("0 * * * *", "Europe/Berlin").sub_hourly is False
    assert Cron("30 2 * * *", "Europe/Berlin").sub_hourly is False
    assert Cron("0 0 * * * *", "Europe/Berlin").sub_hourly is False  # seconds field, once an hour
    assert Cron("0,30 * * * *", "Europe/Berlin").sub_hourly is True
    assert Cron("*/10 0 * * * *", "Europe/Berlin").sub_hourly is True  # six times in minute 0
    daily = Cron("30 2 * * *", "Europe/Berlin")
    assert daily.latest_at_or_before(utc(2026, 10, 25, 1, 45), utc(2026, 10, 25)) == utc(2026, 10, 25, 0, 30)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4 *", "* * 31 2,4,6,9,11 *", "0 0 0 30 2 * "])
def test_an_expression_that_never_fires_is_refused(expression: str) -> None:
    with pytest.raises(CronError, match="never fires"):
        Cron(expression, "UTC")


def test_february_29_is_a_date_that_fires_in_leap_years() -> None:
    assert Cron("0 0 29 2 *", "UTC").next_after(utc(2026, 3, 1)) == utc(2028, 2, 29)


def test_skipped_ticks_are_counted() -> None:
    every_second = Cron("* * * * * *", "UTC")
    start, now = utc(2026, 1, 1, 10, 0, 1), utc(2026, 1, 1, 10, 0, 10, 500_000)  # ten ticks due
    assert decide(every_second, start, now, misfire=Misfire.SKIP).skipped == 9
    assert decide(every_second, start, now, misfire=Misfire.CATCH_UP, cap=3).skipped == 7
    assert decide(every_second, start, now, misfire=Misfire.CATCH_UP, cap=100).skipped == 0
    daily = Cron("0 3 * * *", "UTC")
    assert decide(daily, utc(2026, 1, 1, 3), utc(2026, 1, 1, 5), grace_s=60).skipped == 1
    a_day_down = decide(every_second, start, start + timedelta(days=1))
    assert a_day_down.skipped == 1000  # counted up to a limit, never a day's worth of iteration
