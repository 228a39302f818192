"""One value the database refuses never holds up the others, and an outage loses no outcome.

The poison is a real refusal by the server: a CHECK constraint added to the test's own database
refuses any result (or logged event) carrying a marker, the way PostgreSQL refuses a value it
cannot store. Nothing here is mocked; the sanitizer at the db boundary cannot remove it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from skiplock.queue import Engine
from skiplock.queue._completer import Completer
from skiplock.queue.client import EnqueueRequest
from tests.conftest import make_settings
from tests.support.faults import PrivateServer, private_postgres
from tests.support.waiting import wait_until

GOOD = 1000
FINAL = ("succeeded", "failed", "cancelled")

REFUSE_POISON_RESULTS = """
ALTER TABLE jobs ADD CONSTRAINT test_no_poison_result
    CHECK (result IS NULL OR result::text NOT LIKE '%poison%')
"""
REFUSE_POISON_EVENTS = """
ALTER TABLE job_events ADD CONSTRAINT test_no_poison_event
    CHECK (kind = 'state' OR data::text NOT LIKE '%poison%')
"""


async def _all_in(db: asyncpg.Connection, ids: list[int], state: str) -> bool:
    return await _states(db, ids) == {state: len(ids)}


async def _states(db: asyncpg.Connection, ids: list[int]) -> dict[str, int]:
    rows = await db.fetch("SELECT state::text, count(*) AS n FROM jobs WHERE id = ANY($1) GROUP BY 1", ids)
    return {r["state"]: r["n"] for r in rows}


async def _finished_while_the_database_is_stopped(
    server: PrivateServer, engine: Engine, count: int, seconds: float
) -> tuple[list[int], Completer]:
    """``count`` jobs of ``seconds`` running, then the server stopped: once the completer holds
    all their outcomes, they finished while the database was away."""
    ids = [(await engine.client.enqueue("wait", {"seconds": seconds})).id for _ in range(count)]
    db = await asyncpg.connect(server.dsn)
    try:
        await wait_until(lambda: _all_in(db, ids, "running"), timeout=20)
    finally:
        await db.close()
    server.stop()
    completer = _completer(engine)
    await wait_until(lambda: completer.pending == count, timeout=20)
    return ids, completer


def _completer(engine: Engine) -> Completer:
    assert engine.supervisor is not None
    return next(s for s in engine.supervisor.services if isinstance(s, Completer))


async def test_poison_outcome_among_a_thousand_good_ones_fails_alone_and_the_rest_succeed_at_once(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    await db.execute(REFUSE_POISON_RESULTS)
    settings = make_settings(dsn, concurrency=100)
    async with Engine(settings, registry, dsn) as engine:
        started = time.monotonic()
        poisoned = await engine.client.enqueue("record_run", {"marker": "poison"}, max_attempts=3)
        good = await engine.client.enqueue_many([EnqueueRequest("noop", {}) for _ in range(GOOD)])

        async def all_final() -> bool:
            states = await _states(db, [poisoned.id, *good])
            return sum(states.get(s, 0) for s in FINAL) == GOOD + 1

        await wait_until(all_final, timeout=60, interval=0.1)
        elapsed = time.monotonic() - started
    print(f"\n{GOOD} good jobs and one poisoned: all final {elapsed:.2f} s after enqueue")
    assert await _states(db, good) == {"succeeded": GOOD}
    assert await db.fetchval("SELECT max(attempts) FROM jobs WHERE id = ANY($1)", good) == 1
    job = await db.fetchrow(
        "SELECT state::text, attempts, result, errors FROM jobs WHERE id = $1", poisoned.id
    )
    assert job is not None
    assert job["state"] == "failed"
    assert job["attempts"] == 1  # ended at once, not re-run by a rescue
    assert job["result"] is None
    [error] = job["errors"]
    assert error["type"] == "OutcomeNotStored"
    assert error["message"].startswith("the outcome could not be stored: ")
    assert "test_no_poison_result" in error["message"]  # the server's own reason, readable
    assert "Failing row" not in error["message"]  # not its DETAIL, which quotes the refused value
    assert error["attempt"] == 1


async def test_refused_event_is_dropped_and_every_other_event_and_outcome_written(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    await db.execute(REFUSE_POISON_EVENTS)
    lines = ["before", "poison here", "after"]
    async with Engine(make_settings(dsn), registry, dsn) as engine:
        # One job's events go through the event writer while it runs, the other's with its outcome.
        while_running = await engine.client.enqueue("log_lines", {"lines": lines, "then_wait_s": 1.0})
        with_outcome = await engine.client.enqueue("log_lines", {"lines": lines})
        others = await engine.client.enqueue_many(
            [EnqueueRequest("log_lines", {"lines": [f"fine {n}"]}) for n in range(50)]
        )
        ids = [while_running.id, with_outcome.id, *others]

        async def all_final() -> bool:
            states = await _states(db, ids)
            return sum(states.get(s, 0) for s in FINAL) == len(ids)

        await wait_until(all_final, timeout=30, interval=0.1)
    assert await _states(db, ids) == {"succeeded": len(ids)}
    for job_id in (while_running.id, with_outcome.id):
        logged = await db.fetch(
            "SELECT data->>'message' AS m FROM job_events WHERE job_id = $1 AND kind = 'log' ORDER BY seq",
            job_id,
        )
        assert [r["m"] for r in logged] == ["before", "after"], job_id
    logged = await db.fetchval(
        "SELECT count(*) FROM job_events WHERE job_id = ANY($1) AND kind = 'log'", others
    )
    assert logged == len(others)


@pytest.mark.slow
async def test_outcomes_pending_while_the_database_is_away_are_written_when_it_is_back(
    registry: Any,
) -> None:
    async with private_postgres() as server:
        settings = make_settings(server.dsn, lease_s=60.0)
        async with Engine(settings, registry, server.dsn) as engine:
            ids, completer = await _finished_while_the_database_is_stopped(server, engine, 20, 1.0)
            await asyncio.sleep(2.0)  # the outage goes on: the completer keeps them and retries
            assert completer.pending == 20
            server.start()
            back = time.monotonic()
            await wait_until(lambda: completer.pending == 0, timeout=30)
            written_s = time.monotonic() - back
            db = await asyncpg.connect(server.dsn)
            try:
                assert await _states(db, ids) == {"succeeded": 20}
                assert await db.fetchval("SELECT max(attempts) FROM jobs WHERE id = ANY($1)", ids) == 1
            finally:
                await db.close()
    print(f"\n20 outcomes written {written_s:.2f} s after the database came back")


@pytest.mark.slow
async def test_stop_with_the_database_away_ends_within_its_bound(registry: Any) -> None:
    async with private_postgres() as server:
        settings = make_settings(server.dsn, lease_s=60.0, shutdown_grace_s=1.0)
        engine = Engine(settings, registry, server.dsn)
        await engine.start()
        try:
            await _finished_while_the_database_is_stopped(server, engine, 10, 0.5)
        finally:
            stopping = time.monotonic()
            await asyncio.wait_for(engine.stop(), timeout=60)
            stopped_s = time.monotonic() - stopping
    print(f"\nstop with the database away and 10 outcomes pending: {stopped_s:.2f} s")
    # grace (1 s, nothing left running) + the completer's flush bound + the rest of the stop
    assert stopped_s < settings.shutdown_grace_s + Completer.STOP_FLUSH_S + 3.0


@pytest.mark.slow
async def test_events_logged_while_the_database_is_away_are_written_in_order_when_it_is_back(
    registry: Any,
) -> None:
    async with private_postgres() as server:
        settings = make_settings(server.dsn, lease_s=60.0)
        async with Engine(settings, registry, server.dsn) as engine:
            job = await engine.client.enqueue("chatty", {"lines": 40, "size": 10, "pause_s": 0.1})
            db = await asyncpg.connect(server.dsn)
            try:
                await wait_until(
                    lambda: db.fetchval(
                        "SELECT count(*) FROM job_events WHERE job_id = $1 AND kind = 'log'", job.id
                    ),
                    timeout=20,
                )
            finally:
                await db.close()
            server.stop()
            await asyncio.sleep(2.0)  # about 20 lines logged meanwhile
            server.start()
            db = await asyncpg.connect(server.dsn)
            try:
                await wait_until(lambda: _all_in(db, [job.id], "succeeded"), timeout=30)
                logged = await db.fetch(
                    "SELECT seq, (data->'fields'->>'n')::int AS n FROM job_events"
                    " WHERE job_id = $1 AND kind = 'log' ORDER BY seq",
                    job.id,
                )
            finally:
                await db.close()
    print(f"\n{len(logged)} of 40 lines logged across a 2 s outage were written")
    assert [r["n"] for r in logged] == list(range(40))


async def test_stop_while_an_outcome_waits_on_a_row_lock_ends_within_its_bound(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    settings = make_settings(dsn, shutdown_grace_s=1.0)
    engine = Engine(settings, registry, dsn)
    await engine.start()
    locker = await asyncpg.connect(dsn)
    try:
        job = await engine.client.enqueue("wait", {"seconds": 0.5})
        await wait_until(
            lambda: db.fetchval(
                "SELECT count(*) FROM job_events WHERE job_id = $1 AND kind = 'progress'", job.id
            )
        )
        await locker.execute("BEGIN")
        await locker.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job.id)  # held till the end
        completer = _completer(engine)
        await wait_until(lambda: completer.pending == 1)
        waiting = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        await wait_until(lambda: db.fetchval(waiting))  # the outcome's UPDATE waits on our lock
    finally:
        stopping = time.monotonic()
        await asyncio.wait_for(engine.stop(), timeout=60)
        stopped_s = time.monotonic() - stopping
        await locker.close()
    print(f"\nstop with an outcome write waiting on a row lock: {stopped_s:.2f} s")
    assert stopped_s < settings.shutdown_grace_s + Completer.STOP_FLUSH_S + 3.0
    assert (
        await db.fetchval("SELECT state::text FROM jobs WHERE id = $1", job.id) == "running"
    )  # left to its lease


async def test_outcome_whose_failure_is_refused_too_is_left_to_its_lease_not_retried_forever(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    await db.execute(REFUSE_POISON_RESULTS)
    await db.execute(  # the OutcomeNotStored failure refused as well, for this one job only
        """ALTER TABLE jobs ADD CONSTRAINT test_no_failure_record
               CHECK (args->>'marker' IS DISTINCT FROM 'poison twice'
                      OR errors::text NOT LIKE '%OutcomeNotStored%')"""
    )
    async with Engine(make_settings(dsn, lease_s=2.0), registry, dsn) as engine:
        job = await engine.client.enqueue("record_run", {"marker": "poison twice"}, max_attempts=1)
        others = [(await engine.client.enqueue("noop", {})).id for _ in range(20)]
        completer = _completer(engine)
        await wait_until(lambda: _all_in(db, others, "succeeded"), timeout=20)
        assert await db.fetchval("SELECT max(attempts) FROM jobs WHERE id = ANY($1)", others) == 1
        await wait_until(lambda: db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = $1", job.id))
        await wait_until(lambda: completer.pending == 0, timeout=10)  # given up, not retried
        assert await db.fetchval("SELECT state::text FROM jobs WHERE id = $1", job.id) == "running"
        await wait_until(lambda: _all_in(db, [job.id], "failed"), timeout=30)  # the lease ran out
    errors = await db.fetchval("SELECT errors FROM jobs WHERE id = $1", job.id)
    assert [e["type"] for e in errors] == ["LeaseLost"]
