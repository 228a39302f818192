"""No task can stop the engine, and a dead background service never leaves a half-alive process.

A task may raise anything (SystemExit, KeyboardInterrupt, its own CancelledError, an exception whose
``__str__`` raises): its job ends with a clear outcome and every other job goes on. A background
service that ends without being asked makes ``/health`` answer 503 naming it, and the process exit
non-zero, so an orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from skiplock.queue import Engine, JobState
from skiplock.queue._pruner import Pruner
from tests.factories import job
from tests.support.live import free_port
from tests.support.waiting import wait_until
from tests.support.workers import spawn, start_worker, stop_worker

Client = AsyncTestClient[Any]


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


#: kind → (error type recorded, words its message must hold)
RAISED = {
    "system_exit": ("SystemExit", "3"),
    "keyboard_interrupt": ("KeyboardInterrupt", "KeyboardInterrupt"),
    "generator_exit": ("GeneratorExit", "GeneratorExit"),
    "cancelled": ("CancelledError", "raised CancelledError itself"),
    "broken_str": ("BrokenStr", "BrokenStr"),
    "timeout": ("TimeoutError", "the task's own upstream timed out"),
}


async def final(api: Client, job_id: int, timeout: float = 15) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/jobs/{job_id}")).json()
        return body if body["state"] in {"succeeded", "failed", "cancelled"} else None

    result: dict[str, Any] = await wait_until(reached, timeout)
    return result


@pytest.mark.parametrize("task", ["raises", "raises_in_thread"])
@pytest.mark.parametrize("kind", list(RAISED))
async def test_a_task_raising_anything_fails_alone_and_the_engine_goes_on(
    api: Client, task: str, kind: str
) -> None:
    # A healthy job runs beside the bad one: it must not be dragged down with it.
    beside = (await api.post("/jobs", json={"task": "wait", "args": {"seconds": 0.5}})).json()
    bad = (await api.post("/jobs", json={"task": task, "args": {"kind": kind}, "timeout_s": 30})).json()
    done = await final(api, bad["id"])
    error_type, words = RAISED[kind]
    assert done["state"] == "failed"
    assert [e["type"] for e in done["errors"]] == [error_type, error_type]  # retried as any failure
    assert words in done["errors"][0]["message"]
    assert "timed out after" not in done["errors"][0]["message"]  # not the job's own timeout
    assert (await final(api, beside["id"]))["state"] == "succeeded"
    after = (await api.post("/jobs", json={"task": "noop", "args": {}})).json()
    assert (await final(api, after["id"]))["state"] == "succeeded"  # still claiming
    health = await api.get("/health")
    assert health.status_code == 200, health.text


async def test_a_service_that_dies_makes_health_answer_503_naming_it(api: Client) -> None:
    assert (await api.get("/health")).status_code == 200
    job = (await api.post("/jobs", json={"task": "kill_service", "args": {"name": "pruner"}})).json()
    assert (await final(api, job["id"]))["result"] == {"cancelled": 1}

    async def unhealthy() -> Any:
        response = await api.get("/health")
        return response if response.status_code == 503 else None

    response = await wait_until(unhealthy, 10)
    assert response.json()["checks"] == {"pruner": False}
    assert (await api.get("/ready")).status_code == 503


async def test_worker_process_exits_non_zero_when_a_service_dies(dsn: str, db: asyncpg.Connection) -> None:
    worker = start_worker(dsn, lease_s="600")
    try:
        await db.execute("INSERT INTO jobs (task, args) VALUES ('kill_service', '{\"name\": \"rescuer\"}')")
        started = time.monotonic()
        await wait_until(lambda: worker.poll() is not None, 20)
        print(f"\nworker exited {worker.returncode} {time.monotonic() - started:.2f}s after the job")
        assert worker.returncode not in (0, None)
    finally:
        stop_worker(worker, signal.SIGKILL)


async def test_serve_process_exits_non_zero_when_a_service_dies(dsn: str) -> None:
    port = free_port()
    server = spawn(dsn, "serve", port=str(port), auth="off")
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                try:
                    async with http.get(f"{base}/health") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(healthy, 30, interval=0.1)
            async with http.post(
                f"{base}/jobs", json={"task": "kill_service", "args": {"name": "scheduler"}}
            ) as response:
                assert response.status == 201
        started = time.monotonic()
        await wait_until(lambda: server.poll() is not None, 20)
        print(f"\nserve exited {server.returncode} {time.monotonic() - started:.2f}s after the job")
        assert server.returncode not in (0, None)
    finally:
        stop_worker(server, signal.SIGKILL)


async def test_the_pruner_survives_an_unexpected_error_and_counts_it(
    engine: Engine, db: asyncpg.Connection
) -> None:
    # A real refusal from the server (a trigger), not the database being away.
    await db.execute(
        "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'deletes refused'; END $$;"
        " CREATE TRIGGER refuse BEFORE DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION refuse_delete()"
    )
    old = await job(db, JobState.SUCCEEDED, finished_at=datetime.now(UTC) - timedelta(days=30))
    pruner = Pruner(engine.pool, retention_s=60, interval_s=0.05)
    errors_before = counted("skiplock_loop_errors_total", service="pruner")
    loop = asyncio.create_task(pruner.run(asyncio.Event()))
    try:
        await wait_until(lambda: counted("skiplock_loop_errors_total", service="pruner") >= errors_before + 2)
        assert not loop.done()
        await db.execute("DROP TRIGGER refuse ON jobs")
        await wait_until(lambda: db.fetchval("SELECT NOT EXISTS (SELECT 1 FROM jobs WHERE id = $1)", old), 10)
    finally:
        await pruner.stop()
        await asyncio.wait({loop}, timeout=10)
    assert loop.done()
    assert loop.exception() is None
