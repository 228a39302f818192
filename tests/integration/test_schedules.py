"""Schedules: the API, exactly once per tick across processes, misfires, and code-declared ones."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from skiplock.errors import ConfigError
from skiplock.queue import Engine, Task, TaskRegistry, registered, task
from skiplock.queue._scheduler import PARKED, Scheduler
from skiplock.settings import Settings
from tests.conftest import make_settings
from tests.support.live import app_client
from tests.support.tasks import NoArgs, noop
from tests.support.waiting import wait_until
from tests.support.workers import ROOT, start_worker, stop_worker

Client = AsyncTestClient[Any]


@pytest.fixture
async def api(settings: Settings, registry: Any) -> AsyncIterator[Client]:
    async with app_client(make_settings(settings.database_url or "", scheduler=False), registry) as client:
        yield client


BODY = {
    "name": "tidy",
    "cron": "*/5 * * * *",
    "timezone": "Europe/Berlin",
    "task": "sleep",
    "args": {"seconds": 1},
}


async def test_create_read_change_trigger_and_delete_a_schedule(api: Client) -> None:
    created = await api.post("/schedules", json=BODY)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["args"] == {"seconds": 1.0, "steps": 10, "fail": False}
    assert len(schedule["upcoming"]) == 5
    assert schedule["next_run_at"] == schedule["upcoming"][0]
    listed = (await api.get("/schedules")).json()
    assert [s["name"] for s in listed if s["source"] == "api"] == ["tidy"]
    assert [s["name"] for s in listed] == sorted(s["name"] for s in listed)

    changed = (
        await api.patch(f"/schedules/{schedule['id']}", json={"cron": "0 4 * * *", "enabled": False})
    ).json()
    assert changed["cron"] == "0 4 * * *"
    assert changed["enabled"] is False
    assert changed["next_run_at"] != schedule["next_run_at"]
    assert datetime.fromisoformat(changed["next_run_at"]).astimezone(UTC).minute == 0

    triggered = await api.post(f"/schedules/{schedule['id']}/trigger")
    assert triggered.status_code == 202
    job = triggered.json()
    assert job["task"] == "sleep"
    assert job["schedule_id"] == schedule["id"]
    history = (await api.get("/jobs", params={"schedule_id": schedule["id"]})).json()["items"]
    assert [j["id"] for j in history] == [job["id"]]

    assert (await api.delete(f"/schedules/{schedule['id']}")).status_code == 204
    assert (await api.get(f"/schedules/{schedule['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"cron": "61 * * * *"}, 422, ["cron", "out of range"]),
        ({"cron": "* * *"}, 422, ["cron", "5 fields"]),
        ({"cron": "0 0 30 2 *"}, 422, ["cron", "never fires"]),
        ({"queue": "media:2"}, 422, ["queue"]),
        ({"timezone": "Mars/Base"}, 422, ["timezone"]),
        ({"task": "nope"}, 422, ["task", "unknown task"]),
        ({"args": {"seconds": -5}}, 422, ["args.seconds"]),
        ({"priority": 500}, 422, ["priority"]),
        ({"misfire": "sometimes"}, 422, ["misfire"]),
        ({"name": ""}, 422, ["name"]),
        ({"surprise": 1}, 422, ["surprise"]),
    ],
)
async def test_bad_schedule_is_a_422_naming_the_field(
    api: Client, db: asyncpg.Connection, change: dict[str, Any], status: int, words: list[str]
) -> None:
    response = await api.post("/schedules", json={**BODY, **change})
    assert response.status_code == status, response.text
    for word in words:
        assert word in response.text
    assert await db.fetchval("SELECT count(*) FROM schedules WHERE source = 'api'") == 0


async def test_duplicate_name_unknown_id_and_bad_changes(api: Client) -> None:
    first = (await api.post("/schedules", json=BODY)).json()
    duplicate = await api.post("/schedules", json=BODY)
    assert duplicate.status_code == 409
    assert "tidy" in duplicate.text
    assert (await api.get("/schedules/987654")).status_code == 404
    assert (await api.post("/schedules/987654/trigger")).status_code == 404
    assert (await api.delete("/schedules/987654")).status_code == 404
    assert (await api.get("/schedules/abc")).status_code == 422
    bad = await api.patch(f"/schedules/{first['id']}", json={"cron": "nonsense"})
    assert bad.status_code == 422
    assert "cron" in bad.text
    never = await api.patch(f"/schedules/{first['id']}", json={"cron": "0 0 30 2 *"})
    assert never.status_code == 422, never.text
    assert "never fires" in never.text
    assert (await api.get(f"/schedules/{first['id']}")).json()["cron"] == "*/5 * * * *"


@pytest.mark.parametrize("field", ["cron", "timezone", "task", "args", "enabled", "misfire"])
async def test_a_change_to_null_of_a_field_that_cannot_be_null_is_a_422_naming_it(
    api: Client, field: str
) -> None:
    created = (await api.post("/schedules", json=BODY)).json()
    response = await api.patch(f"/schedules/{created['id']}", json={field: None})
    assert response.status_code == 422, response.text
    assert field in response.text
    after = (await api.get(f"/schedules/{created['id']}")).json()
    assert after | {"upcoming": None} == created | {"upcoming": None}  # unchanged


async def test_a_change_to_null_clears_the_queue_and_the_priority(api: Client) -> None:
    created = (await api.post("/schedules", json={**BODY, "queue": "reports", "priority": 5})).json()
    response = await api.patch(f"/schedules/{created['id']}", json={"queue": None, "priority": None})
    assert response.status_code == 200, response.text
    assert (response.json()["queue"], response.json()["priority"]) == (None, None)


_names = itertools.count()


async def insert_due(db: asyncpg.Connection, cron: str, next_run_at: datetime, misfire: str = "skip") -> int:
    schedule_id: int = await db.fetchval(
        "INSERT INTO schedules (name, cron, task, misfire, next_run_at) "
        "VALUES ($1, $2, 'noop', $3, $4) RETURNING id",
        f"due-{next(_names)}",
        cron,
        misfire,
        next_run_at,
    )
    return schedule_id


@pytest.fixture
async def quiet_engine(settings: Settings, registry: Any) -> AsyncIterator[Engine]:
    """An engine whose own scheduler is off: the test fires schedules itself, with a pinned clock."""
    no_scheduler = make_settings(settings.database_url or "", scheduler=False)
    async with Engine(no_scheduler, registry, settings.database_url or "") as running:
        yield running


async def ticks_of(db: asyncpg.Connection, schedule_id: int) -> list[datetime]:
    rows = await db.fetch(
        "SELECT scheduled_for FROM jobs WHERE schedule_id = $1 ORDER BY scheduled_for", schedule_id
    )
    return [r["scheduled_for"] for r in rows]


async def test_restart_after_ten_missed_ticks_skip_fires_once_and_catch_up_fires_each(
    quiet_engine: Engine, db: asyncpg.Connection
) -> None:
    engine = quiet_engine
    start = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    skip = await insert_due(db, "* * * * * *", start, "skip")
    catch_up = await insert_due(db, "* * * * * *", start, "catch_up")
    scheduler = Scheduler(engine.pool, engine.registry, catch_up_cap=100)
    await scheduler.fire_due(now=start + timedelta(seconds=9, milliseconds=500))  # down for 10 ticks
    assert await ticks_of(db, skip) == [start + timedelta(seconds=9)]
    assert await ticks_of(db, catch_up) == [start + timedelta(seconds=n) for n in range(10)]
    capped = await insert_due(db, "* * * * * *", start - timedelta(hours=1), "catch_up")
    await Scheduler(engine.pool, engine.registry, catch_up_cap=5).fire_due(now=start)
    assert len(await ticks_of(db, capped)) == 5  # never a storm
    next_run = await db.fetchval("SELECT next_run_at FROM schedules WHERE id = $1", capped)
    assert next_run == start + timedelta(seconds=1)


async def test_disabled_deleted_or_changed_schedules_fire_nothing_stale(
    quiet_engine: Engine, db: asyncpg.Connection
) -> None:
    engine = quiet_engine
    now = await db.fetchval("SELECT now()")
    scheduler = Scheduler(engine.pool, engine.registry)
    disabled = await insert_due(db, "* * * * *", now - timedelta(seconds=1))
    await engine.client.schedules.update(disabled, {"enabled": False})
    deleted = await insert_due(db, "*/2 * * * *", now - timedelta(seconds=1))
    await engine.client.schedules.delete(deleted)
    changed = await insert_due(db, "*/3 * * * *", now - timedelta(seconds=1))
    await engine.client.schedules.update(changed, {"cron": "0 0 1 1 *"})  # next 1 January
    await scheduler.fire_due()
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE schedule_id IS NOT NULL") == 0
    reenabled = await engine.client.schedules.update(disabled, {"enabled": True})
    assert reenabled.next_run_at > now  # recomputed from now: no replay of what it missed


async def test_three_scheduler_processes_fire_each_tick_exactly_once(
    dsn: str, db: asyncpg.Connection
) -> None:
    workers = [start_worker(dsn) for _ in range(3)]
    try:
        # Once every process listens, its scheduler runs: the first tick then cannot be missed by a
        # slow start (which the misfire policy would rightly skip).
        await wait_until(
            lambda: db.fetchval(
                "SELECT count(*) = 3 FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            ),
            30,
        )
        first_tick = await db.fetchval("SELECT date_trunc('second', now()) + interval '2 seconds'")
        schedule_id = await insert_due(db, "* * * * * *", first_tick)
        await wait_until(
            lambda: db.fetchval("SELECT count(*) >= 6 FROM jobs WHERE schedule_id = $1", schedule_id), 30
        )
    finally:
        for worker in workers:
            stop_worker(worker)
    ticks = await ticks_of(db, schedule_id)
    assert ticks[0] == first_tick
    assert ticks == [first_tick + timedelta(seconds=n) for n in range(len(ticks))]  # none missing, none twice
    assert len(ticks) >= 6


async def test_schedule_declared_in_code_is_created_and_never_overwrites_an_api_one(
    settings: Settings, registry: Any, db: asyncpg.Connection
) -> None:
    async with Engine(settings, registry, settings.database_url or "") as engine:
        declared = [s for s in await engine.client.schedules.all() if s.name == "nightly_report"]
    assert len(declared) == 1
    assert (declared[0].cron, declared[0].source) == ("0 3 * * *", "code")
    await db.execute("UPDATE schedules SET source = 'api', cron = '0 5 * * *' WHERE name = 'nightly_report'")
    async with Engine(settings, registry, settings.database_url or ""):
        await asyncio.sleep(0)
    assert await db.fetchval("SELECT cron FROM schedules WHERE name = 'nightly_report'") == "0 5 * * *"


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_parked_invalid_rows_never_stop_the_scheduler_on_february_29(
    quiet_engine: Engine, db: asyncpg.Connection
) -> None:
    leap_day = datetime(2028, 2, 29, 12, 0, tzinfo=UTC)  # the old parking (year 9999) raised here
    never = await insert_due(db, "0 0 30 2 *", leap_day)  # rows written by hand, past validation
    nonsense = await insert_due(db, "banana * * * *", leap_day)
    good = await insert_due(db, "* * * * *", leap_day)
    invalid_before = counted("skiplock_schedule_errors_total", reason="invalid")
    await Scheduler(quiet_engine.pool, quiet_engine.registry).fire_due(now=leap_day)  # raised before
    assert await ticks_of(db, good) == [leap_day]
    parked = await db.fetch("SELECT next_run_at FROM schedules WHERE id = ANY($1)", [never, nonsense])
    assert [r["next_run_at"] for r in parked] == [PARKED, PARKED]
    assert counted("skiplock_schedule_errors_total", reason="invalid") - invalid_before == 2


async def test_a_batch_with_an_unstorable_schedule_still_fires_every_other(
    quiet_engine: Engine, db: asyncpg.Connection
) -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    good = [await insert_due(db, "* * * * *", now) for _ in range(3)]
    bad = await insert_due(db, "* * * * *", now)
    await db.execute("UPDATE schedules SET queue = repeat('q', 101) WHERE id = $1", bad)  # jobs refuse it
    unstorable_before = counted("skiplock_schedule_errors_total", reason="unstorable")
    await Scheduler(quiet_engine.pool, quiet_engine.registry).fire_due(now=now)
    assert [await ticks_of(db, g) for g in good] == [[now]] * 3
    assert await ticks_of(db, bad) == []
    assert await db.fetchval("SELECT next_run_at FROM schedules WHERE id = $1", bad) == now + timedelta(
        minutes=1
    )
    assert counted("skiplock_schedule_errors_total", reason="unstorable") - unstorable_before == 1


async def test_skipped_ticks_are_counted(quiet_engine: Engine, db: asyncpg.Connection) -> None:
    start = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    await insert_due(db, "* * * * * *", start, "skip")
    before = counted("skiplock_schedule_misfires_total")
    await Scheduler(quiet_engine.pool, quiet_engine.registry).fire_due(now=start + timedelta(seconds=9.5))
    assert counted("skiplock_schedule_misfires_total") - before == 9  # ten due, the latest fired


class FlakyRegistry(TaskRegistry):
    """A registry that raises something unexpected while ``broken`` (any error, not the database)."""

    broken = True

    def __contains__(self, name: object) -> bool:
        if self.broken:
            raise RuntimeError("unexpected")
        return super().__contains__(name)


async def test_the_scheduler_loop_survives_an_unexpected_error(
    quiet_engine: Engine, registry: Any, db: asyncpg.Connection
) -> None:
    flaky = FlakyRegistry(registry)
    scheduler = Scheduler(quiet_engine.pool, flaky, max_sleep_s=0.2)
    errors_before = counted("skiplock_loop_errors_total", service="scheduler")
    schedule_id = await insert_due(db, "* * * * * *", await db.fetchval("SELECT now()"))
    ready = asyncio.Event()
    loop = asyncio.create_task(scheduler.run(ready))
    try:
        await wait_until(
            lambda: counted("skiplock_loop_errors_total", service="scheduler") >= errors_before + 2
        )
        flaky.broken = False
        await wait_until(lambda: ticks_of(db, schedule_id), 10)
    finally:
        await scheduler.stop()
        await loop
    assert await ticks_of(db, schedule_id)


async def test_every_five_minutes_in_berlin_fires_through_the_fall_back_night(
    quiet_engine: Engine, db: asyncpg.Connection
) -> None:
    night = [datetime(2026, 10, 25, 0, 0, tzinfo=UTC) + timedelta(minutes=5 * n) for n in range(31)]
    schedule_id = await insert_due(db, "*/5 * * * *", night[0])
    await db.execute("UPDATE schedules SET timezone = 'Europe/Berlin' WHERE id = $1", schedule_id)
    scheduler = Scheduler(quiet_engine.pool, quiet_engine.registry)
    while (due := await db.fetchval("SELECT next_run_at FROM schedules WHERE id = $1", schedule_id)) <= night[
        -1
    ]:
        await scheduler.fire_due(now=due + timedelta(milliseconds=300))  # each tick, on time
    assert await ticks_of(db, schedule_id) == night  # 00:00 to 02:30 UTC, the repeated hour included


async def test_a_declared_schedule_that_never_fires_is_a_start_up_error_naming_it(
    settings: Settings, registry: Any
) -> None:
    with pytest.raises(ConfigError, match=r"task 'leap_report': schedule 'leap_report#2' \('0 0 30 2 \*'\)"):
        task("leap_report", args=NoArgs, schedules=["@daily", "0 0 30 2 *"])
    assert "leap_report" not in registered
    by_hand = Task(name="by_hand", fn=noop.fn, args=NoArgs, schedules=("0 0 31 4 *",))
    engine = Engine(settings, TaskRegistry([*registry, by_hand]), settings.database_url or "")
    with pytest.raises(ConfigError, match=r"schedule 'by_hand' of task 'by_hand'.*never fires"):
        await engine.start()


def test_a_worker_whose_task_declares_a_cron_that_never_fires_exits_saying_which(dsn: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "PYTHONPATH": str(ROOT),
        "SKIPLOCK_TASK_MODULES": "tests.support.bad_schedule_tasks",
        "SKIPLOCK_AUTO_MIGRATE": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "skiplock", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "schedule 'leap_report' ('0 0 30 2 *')" in done.stderr
    assert "never fires" in done.stderr
    assert "Traceback" not in done.stderr
