"""The worker registry: every process's row, GET /workers, and remote control of one process (quiet,
resume, stop, concurrency) from another replica, through the database and NOTIFY."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from skiplock.queue import Engine
from skiplock.queue._pruner import Pruner
from skiplock.queue._statements import WORKERS
from skiplock.queue.workers import served_by
from tests.conftest import make_settings
from tests.integration.test_metrics import sample, scrape
from tests.support.live import app_client
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker

Client = AsyncTestClient[Any]


@pytest.fixture
async def replica(dsn: str, registry: Any) -> AsyncIterator[Client]:
    """An API-only replica (it runs no jobs): the one operators talk to."""
    async with app_client(make_settings(dsn, worker=False, scheduler=False), registry) as client:
        yield client


async def wait_for_worker(db: asyncpg.Connection, process: subprocess.Popen[bytes]) -> str:
    """The id of the worker row ``process`` registered."""
    found: str = await wait_until(
        lambda: db.fetchval("SELECT id FROM workers WHERE pid = $1 AND stopped_at IS NULL", process.pid), 30
    )
    return found


async def enqueue(
    db: asyncpg.Connection,
    n: int,
    task: str = "noop",
    args: dict[str, Any] | None = None,
    queue: str = "default",
) -> None:
    await db.execute(
        "INSERT INTO jobs (queue, task, args) SELECT $1, $2, $3::jsonb FROM generate_series(1, $4)",
        queue,
        task,
        args or {},
        n,
    )
    await db.execute("SELECT pg_notify('skiplock', 'queued:' || $1::text)", queue)


async def count(db: asyncpg.Connection, state: str) -> int:
    found: int = await db.fetchval("SELECT count(*) FROM jobs WHERE state = $1", state)
    return found


async def test_every_process_is_listed_with_its_role_queues_and_running_jobs(
    api: Client, replica: Client, db: asyncpg.Connection
) -> None:
    await enqueue(db, 1, "wait", {"seconds": 30})
    await wait_until(lambda: count(db, "running"))
    workers = (await api.get("/workers")).json()
    by_role = {w["role"]: w for w in workers}
    assert set(by_role) == {"serve", "api"}
    serving, api_only = by_role["serve"], by_role["api"]
    assert serving["state"] == "online"
    assert api_only["state"] == "online"
    assert serving["queues"]["default"] == 100
    assert api_only["queues"] == {}
    assert serving["concurrency"] == 100
    assert api_only["concurrency"] == 0
    running = await db.fetchval("SELECT id FROM jobs WHERE state = 'running'")
    assert serving["running"] == [running]
    assert serving["running_count"] == 1
    owner = await db.fetchval("SELECT lease_owner FROM jobs WHERE id = $1", running)
    assert serving["id"] == owner  # the worker's id is the lease owner of its jobs
    assert 0 <= serving["heartbeat_age_s"] < serving["heartbeat_s"] + 1
    one = await replica.get(f"/workers/{serving['id']}")
    assert one.status_code == 200
    assert one.json()["id"] == serving["id"]


async def test_unknown_worker_is_404_and_an_offline_one_409(replica: Client, db: asyncpg.Connection) -> None:
    missing = await replica.post("/workers/nobody:1:abc/quiet")
    assert missing.status_code == 404
    assert set(missing.json()) == {"status_code", "detail", "extra"}
    assert "nobody:1:abc" in missing.json()["detail"]
    assert (await replica.get("/workers/nobody:1:abc")).status_code == 404
    await db.execute(
        "INSERT INTO workers (id, host, pid, version, role, concurrency, heartbeat_s, last_heartbeat_at)"
        " VALUES ('gone:1:abc', 'gone', 1, '0', 'worker', 4, 1, now() - interval '4 s')"
    )
    assert (await replica.get("/workers/gone:1:abc")).json()["state"] == "offline"
    for action in ("quiet", "resume", "stop"):
        answer = await replica.post(f"/workers/gone:1:abc/{action}")
        assert answer.status_code == 409, action
        assert answer.json()["detail"].startswith("The worker is offline")
    assert (await replica.patch("/workers/gone:1:abc", json={"concurrency": 2})).status_code == 409
    assert await db.fetchval(
        "SELECT NOT quiet AND NOT stop_requested AND concurrency = 4 FROM workers WHERE id = 'gone:1:abc'"
    )


#: Bad PATCH /workers/{id} bodies and the field each 422 names.
BAD_CHANGES: list[tuple[dict[str, Any], str]] = [
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": 10_001}, "concurrency"),
    ({"concurrency": "4"}, "concurrency"),
    ({"concurrency": True}, "concurrency"),
    ({"concurrency": 2.5}, "concurrency"),
    ({}, "concurrency"),
    ({"concurrency": 2, "queues": "x"}, "queues"),
]


async def test_bad_concurrency_is_a_422_naming_the_field_and_changes_nothing(
    api: Client, db: asyncpg.Connection
) -> None:
    worker = (await api.get("/workers")).json()[0]
    for body, field in BAD_CHANGES:
        answer = await api.patch(f"/workers/{worker['id']}", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert set(answer.json()) == {"status_code", "detail", "extra"}
        assert field in str(answer.json()["extra"]), body
    assert await db.fetchval("SELECT concurrency FROM workers WHERE id = $1", worker["id"]) == 100


async def test_jobs_are_not_asked_of_an_api_only_process(replica: Client) -> None:
    me = (await replica.get("/workers")).json()[0]
    assert me["role"] == "api"
    assert (await replica.post(f"/workers/{me['id']}/quiet")).status_code == 409
    assert (await replica.patch(f"/workers/{me['id']}", json={"concurrency": 3})).status_code == 409


async def test_a_concurrency_change_is_applied_within_a_second(
    dsn: str, registry: Any, replica: Client, db: asyncpg.Connection
) -> None:
    settings = make_settings(dsn, concurrency=2, poll_interval_s=5.0, lease_s=30)
    async with Engine(settings, registry, dsn) as engine:
        await enqueue(db, 10, "wait", {"seconds": 30})
        await wait_until(lambda: count(db, "running"))
        await asyncio.sleep(0.2)
        assert await count(db, "running") == 2
        changed = time.monotonic()
        answer = await replica.patch(f"/workers/{engine.owner}", json={"concurrency": 5})
        assert answer.status_code == 202
        assert answer.json()["concurrency"] == 5
        await wait_until(lambda: db.fetchval("SELECT count(*) = 5 FROM jobs WHERE state = 'running'"), 1.0)
        assert time.monotonic() - changed < 1.0
        await asyncio.sleep(0.3)
        assert await count(db, "running") == 5  # not more: 5 is the limit now
        for job in await db.fetch("SELECT id FROM jobs WHERE state = 'running'"):
            await db.execute("SELECT pg_notify('skiplock', 'cancel:' || $1::text)", str(job["id"]))
            await db.execute("UPDATE jobs SET cancel_requested = true WHERE id = $1", job["id"])


async def test_quiet_worker_process_stops_claiming_until_resumed(
    dsn: str, replica: Client, db: asyncpg.Connection
) -> None:
    process = start_worker(dsn, lease_s="3", poll_interval_s="0.2")
    try:
        worker = await wait_for_worker(db, process)
        answer = await replica.post(f"/workers/{worker}/quiet")
        assert answer.status_code == 202
        assert answer.json()["quiet"] is True
        await wait_until(
            lambda: db.fetchval("SELECT state = 'quiet' FROM workers WHERE id = $1", worker), 1.0
        )
        assert (await replica.get(f"/workers/{worker}")).json()["state"] == "quiet"
        await enqueue(db, 5)
        await asyncio.sleep(1.5)  # seven polls of the quiet worker, and the notification
        assert await count(db, "queued") == 5  # nothing claimed
        served = {q["name"]: q for q in (await replica.get("/queues")).json()}
        assert served["default"]["served_by"] == 0
        assert served["default"]["unserved"] is True
        assert (await replica.post(f"/workers/{worker}/resume")).status_code == 202
        await wait_until(lambda: db.fetchval("SELECT count(*) = 5 FROM jobs WHERE state = 'succeeded'"), 1.0)
        assert await db.fetchval("SELECT state FROM workers WHERE id = $1", worker) == "online"
    finally:
        assert stop_worker(process) == 0


async def test_a_worker_process_stopped_from_another_replica_exits_gracefully(
    dsn: str, replica: Client, db: asyncpg.Connection
) -> None:
    process = start_worker(dsn, lease_s="3", shutdown_grace_s="10")
    try:
        worker = await wait_for_worker(db, process)
        await enqueue(db, 1, "wait", {"seconds": 1.0})
        await wait_until(lambda: count(db, "running"), 5)
        answer = await replica.post(f"/workers/{worker}/stop")
        assert answer.status_code == 202
        assert answer.json()["stop_requested"] is True
        await wait_until(
            lambda: db.fetchval("SELECT state = 'stopping' FROM workers WHERE id = $1", worker), 1.0
        )
        code = await asyncio.to_thread(process.wait, 15)
        assert code == 0
        # Graceful: its running job finished within the grace period, not handed back.
        assert await count(db, "succeeded") == 1
        assert (await replica.get(f"/workers/{worker}")).json()["state"] == "offline"
    finally:
        stop_worker(process)


async def test_a_killed_worker_shows_offline_after_missed_heartbeats_with_its_held_jobs_counted(
    dsn: str, replica: Client, db: asyncpg.Connection
) -> None:
    process = start_worker(dsn, lease_s="2")  # beats every 0.67 s: offline 2 s after the last one
    try:
        worker = await wait_for_worker(db, process)
        await enqueue(db, 3, "wait", {"seconds": 60})
        await wait_until(lambda: db.fetchval("SELECT count(*) = 3 FROM jobs WHERE state = 'running'"), 5)
    finally:
        stop_worker(process, signal.SIGKILL)
    killed = time.monotonic()
    await wait_until(
        lambda: db.fetchval(
            "SELECT skiplock_worker_offline(stopped_at, last_heartbeat_at, heartbeat_s)"
            " FROM workers WHERE id = $1",
            worker,
        ),
        5,
    )
    assert time.monotonic() - killed < 3.5
    shown = (await replica.get(f"/workers/{worker}")).json()
    assert shown["state"] == "offline"
    assert shown["running_count"] == 3
    assert shown["stopped_at"] is None
    text = await scrape(replica)
    assert sample(text, "skiplock_worker_held_jobs_offline") == 3
    assert sample(text, "skiplock_workers_online", role="api") == 1
    assert sample(text, "skiplock_workers_online", role="worker") == 0


async def test_a_queue_no_live_worker_serves_is_shown_unserved(api: Client, db: asyncpg.Connection) -> None:
    await enqueue(db, 2, queue="nobody")
    queues = {q["name"]: q for q in (await api.get("/queues")).json()}
    assert queues["nobody"]["served_by"] == 0
    assert queues["nobody"]["unserved"] is True
    assert queues["default"]["served_by"] == 1
    assert queues["default"]["unserved"] is False
    text = await scrape(api)
    assert sample(text, "skiplock_queue_unserved", queue="nobody") == 1
    assert sample(text, "skiplock_queue_unserved", queue="default") == 0
    assert sample(text, "skiplock_workers_online", role="serve") == 1


async def test_a_worker_of_every_queue_runs_jobs_of_a_queue_it_was_not_told_of(
    dsn: str, registry: Any, db: asyncpg.Connection
) -> None:
    await enqueue(db, 2, queue="before-start")  # found by its first poll's look, no notification
    settings = make_settings(dsn, queues=["*"], poll_interval_s=0.3)
    async with Engine(settings, registry, dsn) as engine:
        await wait_until(lambda: db.fetchval("SELECT count(*) = 2 FROM jobs WHERE state = 'succeeded'"), 5)
        await enqueue(db, 3, queue="later")  # served from its notification
        await wait_until(lambda: db.fetchval("SELECT count(*) = 5 FROM jobs WHERE state = 'succeeded'"), 5)
        row = await db.fetchval("SELECT queues FROM workers WHERE id = $1", engine.owner)
        await wait_until(
            lambda: db.fetchval("SELECT queues ? 'later' FROM workers WHERE id = $1", engine.owner), 5
        )
        assert {"*", "default", "before-start"} <= set(row)
        served = {r["name"]: r["workers"] for r in await db.fetch(WORKERS.worker_served_queues)}
        assert served["*"] == 1
        # One process serving every queue is one worker of each, not one for '*' and one more for
        # the queues it lists besides.
        assert {name: served_by(name, served) for name in ("default", "before-start", "nobody")} == {
            "default": 1,
            "before-start": 1,
            "nobody": 1,
        }


async def test_offline_workers_are_pruned_after_their_retention(dsn: str, db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO workers (id, host, pid, version, role, concurrency, heartbeat_s, last_heartbeat_at,"
        " stopped_at) VALUES"
        " ('old:1:a', 'h', 1, '0', 'worker', 1, 1, now() - interval '2 h', now() - interval '2 h'),"
        " ('stale:1:a', 'h', 1, '0', 'worker', 1, 1, now() - interval '2 h', NULL),"
        " ('recent:1:a', 'h', 1, '0', 'worker', 1, 1, now() - interval '10 s', now() - interval '10 s'),"
        " ('live:1:a', 'h', 1, '0', 'worker', 1, 3600, now() - interval '2 h', NULL)"
    )
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        pruner = Pruner(pool, retention_s=86_400, interval_s=60, worker_retention_s=3600)
        assert await pruner.prune_workers() == 2
    finally:
        await pool.close()
    assert {r["id"] for r in await db.fetch("SELECT id FROM workers")} == {"recent:1:a", "live:1:a"}
