"""A task as a handle: ``await task.enqueue(args)`` and ``await handle.result()``, from a client
connected outside any skiplock process and from the one a process's engine provides."""

from __future__ import annotations

import asyncpg
import pytest

from skiplock.errors import ConfigError, JobFailed, ResultTimeout
from skiplock.queue import Client, Engine
from skiplock.queue.handles import default_client_or_none
from tests.support import tasks as test_tasks


async def test_a_connected_client_enqueues_by_task_and_waits_for_the_result(
    engine: Engine, dsn: str, db: asyncpg.Connection
) -> None:
    async with await Client.connect(dsn) as client:
        assert default_client_or_none() is client
        handle = await test_tasks.record_run.enqueue(test_tasks.Marker(marker="typed"), delay_s=0.2)
        assert handle.job.task == "record_run"
        assert handle.job.run_at > handle.job.created_at
        assert await handle.result(timeout=10) == {"marker": "typed"}
        failing = await test_tasks.fails_permanently.enqueue()
        with pytest.raises(JobFailed) as failed:
            await failing.result(timeout=10)
        assert "this input can never work" in str(failed.value)
        slow = await test_tasks.wait.enqueue({"seconds": 5})
        with pytest.raises(ResultTimeout):
            await slow.result(timeout=0.2)
        assert (await slow.refresh()).state in {"queued", "running"}
    # closed: the engine's client is the default again, and the connected one's LISTEN is gone
    assert default_client_or_none() is engine.client
    listening = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'skiplock-client'"
    )
    assert listening == 0


async def test_clients_closed_out_of_order_leave_an_open_default(engine: Engine, dsn: str) -> None:
    first = await Client.connect(dsn)
    second = await Client.connect(dsn)
    await first.close()
    assert default_client_or_none() is second
    await second.close()  # not the closed first one back: the engine's, which first replaced
    assert default_client_or_none() is engine.client
    assert (await test_tasks.noop.enqueue()).client is engine.client


async def test_inside_a_process_task_enqueue_uses_the_engines_client(engine: Engine) -> None:
    handle = await test_tasks.record_run.enqueue({"marker": "engine"})
    assert handle.client is engine.client
    assert await handle.result(timeout=10) == {"marker": "engine"}


async def test_enqueue_in_the_callers_transaction_is_gone_with_its_rollback(
    engine: Engine, db: asyncpg.Connection
) -> None:
    async with engine.client.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await test_tasks.noop.enqueue(conn=conn)
        await tx.rollback()
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_without_a_client_enqueue_says_how_to_get_one() -> None:
    assert default_client_or_none() is None
    with pytest.raises(ConfigError, match=r"Client\.connect"):
        await test_tasks.noop.enqueue()
