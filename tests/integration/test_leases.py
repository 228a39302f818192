"""Leases, attempts and re-claims in one process: what fencing rests on, case by case."""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

import asyncpg
import pytest

from skiplock.errors import LeaseLostError
from skiplock.queue import Engine, TaskRegistry
from skiplock.queue._lease import LeaseKeeper, fenced, lease_hold
from skiplock.queue._producer import Producer
from skiplock.queue._running import StopReason
from skiplock.queue._statements import EVENTS, JOBS
from skiplock.queue.models import ClaimedJob, JobState
from tests.conftest import make_settings
from tests.factories import job
from tests.support import tasks as test_tasks
from tests.support.executions import EXECUTIONS_TABLE, executions, overlaps, summary
from tests.support.faults import refused_dsn, slow_proxy, starved, terminate_backends
from tests.support.waiting import wait_until

T = TypeVar("T")


async def test_heartbeat_extends_only_the_attempt_it_names(tx: asyncpg.Connection) -> None:
    job_id = await job(tx, JobState.RUNNING)  # attempt 1, owner 'factory'
    assert await tx.fetch(JOBS.job_heartbeat, [job_id], "factory", 30.0, [2], 0) == []
    assert await tx.fetch(JOBS.job_heartbeat, [job_id], "other", 30.0, [1], 0) == []
    renewed = await tx.fetch(JOBS.job_heartbeat, [job_id], "factory", 30.0, [1], 0)
    assert [r["id"] for r in renewed] == [job_id]


async def test_events_of_an_attempt_that_is_no_longer_ours_are_not_written(tx: asyncpg.Connection) -> None:
    job_id = await job(tx, JobState.RUNNING)
    for attempt, owner in ((2, "factory"), (1, "other")):
        await tx.execute(
            EVENTS.event_write_many, [job_id], ["log"], ['{"message": "late"}'], [attempt], owner
        )
    assert await tx.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", job_id) == 0
    await tx.execute(EVENTS.event_write_many, [job_id], ["log"], ['{"message": "ours"}'], [1], "factory")
    assert await tx.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", job_id) == 1


async def test_a_child_enqueue_commits_only_under_the_parents_lease(
    engine: Engine, db: asyncpg.Connection
) -> None:
    parent = await job(db, JobState.RUNNING, queue="nobody")
    before = await db.fetchval("SELECT count(*) FROM jobs")
    with pytest.raises(LeaseLostError):
        await engine.client.enqueue_from(parent, 2, "factory", "noop")  # a later attempt holds it
    with pytest.raises(LeaseLostError):
        await engine.client.enqueue_from(parent, 1, "someone else", "noop")
    assert await db.fetchval("SELECT count(*) FROM jobs") == before
    child = await engine.client.enqueue_from(parent, 1, "factory", "noop", queue="nobody")
    assert child.created


async def _attempts_and_errors(db: asyncpg.Connection, job_id: int) -> tuple[int, list[Any]]:
    """The job's attempts so far and the errors its attempts recorded."""
    row = await db.fetchrow("SELECT attempts, errors FROM jobs WHERE id = $1", job_id)
    assert row is not None
    return row["attempts"], row["errors"]


async def test_a_claim_whose_reply_was_lost_is_handed_back_at_once_without_using_an_attempt(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry, pg_admin_dsn: str
) -> None:
    async with Engine(make_settings(dsn, lease_s=30), registry, dsn) as engine:
        # The row as a claim that committed but whose reply never arrived leaves it: ours, unrun.
        job_id = await job(db, JobState.RUNNING, task="noop", lease_owner=engine.owner)
        database = await db.fetchval("SELECT current_database()")
        await terminate_backends(pg_admin_dsn, database, application_name="skiplock-claim")
        # Without the hand-back it would wait for its 30 s lease to run out.
        await wait_until(
            lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id), 10
        )
    assert await _attempts_and_errors(db, job_id) == (1, [])


async def test_a_job_taken_from_a_run_slow_to_stop_is_not_claimed_again_until_that_run_returns(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    await db.execute(EXECUTIONS_TABLE)
    async with Engine(make_settings(dsn, lease_s=5), registry, dsn):
        job_id = await db.fetchval(
            "INSERT INTO jobs (task, args) VALUES ('record_execution', $1) RETURNING id",
            {"seconds": 2, "linger_s": 1.5},
        )
        await wait_until(lambda: db.fetchval("SELECT count(*) = 1 FROM test_executions"), 10)
        # Taken from this process (as a rescuer would after a lease ran out): its heartbeat stops
        # the run, which goes on 1.5 s before it returns, while the job is queued again.
        await db.execute(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL WHERE id = $1",
            job_id,
        )
        await wait_until(
            lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id), 20
        )
    runs = await executions(db)
    found = overlaps(runs)
    print(f"\nre-claim by the same process: {len(runs)} executions; {summary(found)}")
    assert found == []
    assert [run.attempt for run in runs] == [1, 2]
    assert await _attempts_and_errors(db, job_id) == (2, [])  # no second rescue of a dropped claim


def _service(engine: Engine, kind: type[T]) -> T:
    assert engine.supervisor is not None
    return next(s for s in engine.supervisor.services if isinstance(s, kind))


async def test_a_worker_cut_off_alone_fences_its_run_before_another_runs_it(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry, pg_admin_dsn: str
) -> None:
    await db.execute(EXECUTIONS_TABLE)
    settings = make_settings(dsn, lease_s=1, rescue_interval_s=0.2)
    database = await db.fetchval("SELECT current_database()")
    async with Engine(settings, registry, dsn) as cut_off:
        job_id = await db.fetchval(
            "INSERT INTO jobs (task, args) VALUES ('record_execution', $1) RETURNING id", {"seconds": 7}
        )
        await wait_until(lambda: db.fetchval("SELECT count(*) = 1 FROM test_executions"), 10)
        # Its heartbeat and claims now meet a refused port (a proxy refusing this process alone),
        # while the database is up for everyone else, its own rescuer included.
        for service in (_service(cut_off, LeaseKeeper), _service(cut_off, Producer)):
            service.dsn = refused_dsn()
        for name in ("skiplock-lease", "skiplock-claim"):
            await terminate_backends(pg_admin_dsn, database, application_name=name)
        async with Engine(settings, registry, dsn):
            await wait_until(
                lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id), 40
            )
    runs = await executions(db)
    found = overlaps(runs)
    print(f"\nheartbeat refused while the database is up: {len(runs)} executions; {summary(found)}")
    assert found == []
    assert [run.outcome for run in runs] == ["stopped", "finished"]  # fenced, then run elsewhere


async def test_a_slow_database_fences_nothing_and_rescues_nothing_and_a_dead_one_still_fences(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    await db.execute(EXECUTIONS_TABLE)
    lease_s, delay_s = 2.5, 0.25  # a margin of 0.5 s; every round trip half of it longer
    record = {"record_dsn": dsn}  # the records go direct, so they are written whatever the path
    # The engine's rescuer runs too, on the database's clock as any other's: it would take a lease
    # that ran out.
    async with (
        slow_proxy(dsn) as proxy,
        Engine(make_settings(proxy.dsn, lease_s=lease_s, rescue_interval_s=0.2), registry, proxy.dsn),
    ):
        # A first job with the path fast, so the engine's connections and statements are in use (a
        # statement's first use on a connection costs several round trips); then every round trip
        # slow.
        warm = await db.fetchval(
            "INSERT INTO jobs (task, args) VALUES ('record_execution', $1) RETURNING id", record
        )
        await wait_until(lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", warm), 10)
        proxy.delay_s = delay_s
        ids = [
            await db.fetchval(
                "INSERT INTO jobs (task, args) VALUES ('record_execution', $1) RETURNING id",
                {"seconds": 3 * lease_s, **record},
            )
            for _ in range(2)
        ]
        await wait_until(
            lambda: db.fetchval(
                "SELECT count(*) = 2 FROM jobs WHERE id = ANY($1) AND state = 'succeeded'", ids
            ),
            30,
            0.1,
        )
        slow_runs = [r for r in await executions(db) if r.job_id != warm]
        # Then the database as a dead host: no answer at all on that path.
        dead = await db.fetchval(
            "INSERT INTO jobs (task, args) VALUES ('record_execution', $1) RETURNING id",
            {"seconds": 30, **record},
        )
        await wait_until(
            lambda: db.fetchval("SELECT count(*) = 1 FROM test_executions WHERE job_id = $1", dead), 20
        )
        proxy.freeze()
        frozen_at = time.time()
        await wait_until(
            lambda: db.fetchval("SELECT ended_at IS NOT NULL FROM test_executions WHERE job_id = $1", dead),
            15,
            0.1,
        )
        lease_end = await db.fetchval(
            "SELECT extract(epoch FROM lease_expires_at)::float8 FROM jobs WHERE id = $1", dead
        )
        await proxy.close()  # the engine's connections cut: it stops at once
    await test_tasks.close_record_pools()
    runs = await executions(db)
    print(
        f"\nround trips +{delay_s} s: {[(r.attempt, r.outcome) for r in slow_runs]}; dead database:"
        f" {[(r.outcome, round((r.ended_at or 0) - frozen_at, 2)) for r in runs if r.job_id == dead]}"
    )
    # Slow: each run once, to its end, no lease lost nor rescued.
    assert sorted((r.job_id, r.attempt, r.outcome) for r in slow_runs) == [(i, 1, "finished") for i in ids]
    for job_id in ids:
        assert await _attempts_and_errors(db, job_id) == (1, [])
    # Dead: its run stopped by its own clock, before a rescuer could take the job (its lease's end
    # in the database plus the rescuers' hold).
    (stopped,) = [r for r in runs if r.job_id == dead]
    assert stopped.outcome == "stopped"
    assert stopped.ended_at is not None
    assert stopped.ended_at < lease_end + lease_hold(lease_s)


@pytest.mark.parametrize("swallow", [1, 1_000_000])
async def test_a_fenced_run_stays_stopped_whatever_it_swallows(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry, swallow: int
) -> None:
    async with Engine(make_settings(dsn, lease_s=1), registry, dsn) as engine:
        job_id = await db.fetchval(
            "INSERT INTO jobs (task, args) VALUES ('stubborn_steps', $1) RETURNING id",
            {"seconds": 6, "swallow": swallow},
        )
        await wait_until(lambda: len(test_tasks.STEPS.get(job_id, [])) > 5, 10)
        # Taken by another owner (as after a rescue): the next heartbeat misses it and fences it.
        await db.execute("UPDATE jobs SET lease_owner = 'someone else' WHERE id = $1", job_id)
        taken_at = time.monotonic()
        await wait_until(lambda: job_id not in engine.running.ids(), 10)
        steps = test_tasks.STEPS.pop(job_id)
    late = [t - taken_at for t in steps if t > taken_at]
    print(
        f"\nfenced run swallowing {swallow} cancels: {len(late)} steps after it was taken,"
        f" the last at +{max(late, default=0):.2f} s"
    )
    # A heartbeat (1/3 s), the cleanup (0.1 s) and, for one swallowing every cancel, the close (1 s).
    assert max(late, default=0.0) < (1.0 if swallow == 1 else 2.0)
    assert await db.fetchval("SELECT state FROM jobs WHERE id = $1", job_id) == "running"  # no outcome


async def _claimed(db: asyncpg.Connection, engine: Engine, task: str, args: dict[str, Any]) -> ClaimedJob:
    """A job as this engine's claim leaves it (running, attempt 1, ours), in a queue nobody serves."""
    job_id = await job(db, JobState.RUNNING, task=task, args=args, queue="nobody", lease_owner=engine.owner)
    row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row is not None
    return ClaimedJob.from_record(row)


async def _handed_back_unused(db: asyncpg.Connection, job_id: int) -> bool:
    return bool(
        await db.fetchval(
            "SELECT state = 'queued' AND attempts = 0 AND lease_owner IS NULL FROM jobs WHERE id = $1", job_id
        )
    )


async def test_a_run_whose_lease_lapsed_before_its_first_step_never_begins_and_is_handed_back(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    await db.execute(EXECUTIONS_TABLE)
    async with Engine(make_settings(dsn, lease_s=1), registry, dsn) as engine:
        executor = _service(engine, Producer).executor
        ids = []
        for task, args in (("recorded_thread", {"seconds": 0.5}), ("record_execution", {"seconds": 0.5})):
            claimed = await _claimed(db, engine, task, args)
            # As after a pause between the claim and the run's first step: its deadline has passed.
            running = engine.running.add(claimed, valid_until=time.monotonic() - 0.01)
            assert running is not None
            await fenced(executor.run(running), running)
            ids.append(claimed.id)
        for job_id in ids:
            await wait_until(lambda: _handed_back_unused(db, job_id), 10)  # noqa: B023
    assert [row for row in test_tasks.EXECUTIONS if row["job_id"] in ids] == []  # no thread began
    assert await db.fetchval("SELECT count(*) FROM test_executions") == 0


async def test_a_claim_too_late_to_start_is_handed_back_at_once_with_its_attempt_unused(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    async with Engine(make_settings(dsn, lease_s=30), registry, dsn) as engine:
        claimed = await _claimed(db, engine, "noop", {})
        # Its reply took most of a lease: not started (without a hand-back, stuck for its lease).
        _service(engine, Producer)._start(None, claimed, time.monotonic() - 0.01)  # type: ignore[arg-type]
        await wait_until(lambda: _handed_back_unused(db, claimed.id), 10)


async def test_a_task_enqueueing_in_its_own_open_transaction_does_not_block_its_heartbeat(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    async with Engine(make_settings(dsn, lease_s=30), registry, dsn) as engine:
        job_id = await db.fetchval(
            "INSERT INTO jobs (task, args) VALUES ('enqueue_in_transaction', $1) RETURNING id", {"seconds": 5}
        )
        await wait_until(lambda: db.fetchval("SELECT count(*) = 1 FROM test_runs WHERE job_id = $1", job_id))
        # The task's transaction holds its guard's lock on the parent's row now.
        await db.execute("SET lock_timeout = '500ms'")
        renewed = await db.fetch(JOBS.job_heartbeat, [job_id], engine.owner, 30.0, [1], 0)
        assert [r["id"] for r in renewed] == [job_id]
        expired = db.transaction()  # rolled back: the lease as if expired, for the rescue pick alone
        await expired.start()
        try:
            await db.execute(
                "UPDATE jobs SET lease_expires_at = now() - interval '1 hour' WHERE id = $1", job_id
            )
            assert job_id not in {r["id"] for r in await db.fetch(JOBS.job_rescue_pick, 100, None, 0.0)}
        finally:
            await expired.rollback()
        await db.execute("RESET lock_timeout")
        await wait_until(
            lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id), 20
        )


async def test_an_outcome_waiting_to_be_written_keeps_its_lease_and_its_job_is_not_run_again(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    await db.execute(EXECUTIONS_TABLE)
    async with (
        Engine(make_settings(dsn, lease_s=1, rescue_interval_s=0.2), registry, dsn) as engine,
        Engine(make_settings(dsn, lease_s=1, rescue_interval_s=0.2, worker=False), registry, dsn),
    ):
        # Every connection of the engine's pool taken: its completer cannot write for a while,
        # while the other process's rescuer works.
        async with starved(engine.pool):
            job_id = await db.fetchval(
                "INSERT INTO jobs (task, args) VALUES ('record_execution', $1) RETURNING id", {"seconds": 0.2}
            )
            await wait_until(
                lambda: db.fetchval("SELECT count(*) = 1 FROM test_executions WHERE outcome = 'finished'"), 10
            )
            await asyncio.sleep(8)  # past the lease and the rescuers' hold (1 + 5 s)
            # Its outcome is still waiting to be written (the pool was starved indeed), its lease kept.
            assert await db.fetchval("SELECT state FROM jobs WHERE id = $1", job_id) == "running"
        await wait_until(
            lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id), 20
        )
    runs = await executions(db)
    print(f"\noutcome held back 8 s: {len(runs)} executions")
    assert len(runs) == 1
    assert await _attempts_and_errors(db, job_id) == (1, [])


async def test_a_row_this_process_holds_but_no_longer_runs_is_handed_back_before_any_rescue(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    async with Engine(make_settings(dsn, lease_s=3, rescue_interval_s=0.2), registry, dsn) as engine:
        # Ours, running, run by nobody (a fenced run that returned), its lease out for 2 s: the
        # rescuers may take it only 5 s after its lease ran out, the heartbeat's sweep at 1.5 s.
        job_id = await job(
            db,
            JobState.RUNNING,
            lease_owner=engine.owner,
            started_at=await db.fetchval("SELECT now() - interval '5 seconds'"),
            lease_expires_at=await db.fetchval("SELECT now() - interval '2 seconds'"),
        )
        await wait_until(
            lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", job_id), 10
        )
    assert await _attempts_and_errors(db, job_id) == (2, [])  # handed back, not rescued as LeaseLost


async def test_a_job_whose_thread_outlives_the_shutdown_grace_is_not_due_again_while_it_may_run(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    async with Engine(make_settings(dsn, shutdown_grace_s=0.5), registry, dsn) as engine:
        job_id = await db.fetchval(
            "INSERT INTO jobs (task, args) VALUES ('recorded_thread', $1) RETURNING id", {"seconds": 3}
        )
        await wait_until(lambda: any(row["job_id"] == job_id for row in test_tasks.EXECUTIONS), 10)
        await engine.stop()  # the thread goes on past the grace: the process would exit with it
    row = await db.fetchrow(
        "SELECT state, extract(epoch FROM run_at - now()) AS due_in_s FROM jobs WHERE id = $1", job_id
    )
    assert row is not None
    assert row["state"] == "queued"
    assert row["due_in_s"] > 5  # past the exit watchdog (grace + 4 s), not at once


async def test_a_future_completing_with_generator_exit_fails_the_job_and_nothing_else(
    engine: Engine, db: asyncpg.Connection
) -> None:
    job_id = (await engine.client.enqueue("awaits_generator_exit")).id
    await wait_until(lambda: db.fetchval("SELECT state = 'failed' FROM jobs WHERE id = $1", job_id), 10)
    errors = await db.fetchval("SELECT errors FROM jobs WHERE id = $1", job_id)
    assert [e["type"] for e in errors] == ["GeneratorExit"]
    after = (await engine.client.enqueue("noop")).id  # the engine goes on claiming
    await wait_until(lambda: db.fetchval("SELECT state = 'succeeded' FROM jobs WHERE id = $1", after), 10)
    assert engine.healthy


async def test_a_fenced_thread_writes_nothing_its_progress_logs_enqueue_and_outcome_refused(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry
) -> None:
    async with Engine(make_settings(dsn, lease_s=1), registry, dsn) as engine:
        job_id = await db.fetchval(
            "INSERT INTO jobs (task, args) VALUES ('late_reporting_thread', $1) RETURNING id",
            {"seconds": 1.5},
        )
        await wait_until(lambda: test_tasks.LATE_THREADS.get(job_id) == "started", 10)
        await db.execute("UPDATE jobs SET lease_owner = 'someone else' WHERE id = $1", job_id)  # rescued
        await wait_until(lambda: job_id not in engine.running.ids(), 10)  # its thread has returned
        await asyncio.sleep(0.5)  # anything it still wanted to write
    assert test_tasks.LATE_THREADS.pop(job_id) == "LeaseLostError"
    late = "SELECT count(*) FROM job_events WHERE job_id = $1 AND data->>'message' = 'late'"
    assert await db.fetchval(late, job_id) == 0
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE queue = 'nobody'") == 0
    row = await db.fetchrow("SELECT state, lease_owner, result FROM jobs WHERE id = $1", job_id)
    assert row is not None
    assert tuple(row) == ("running", "someone else", None)


@pytest.mark.parametrize(
    ("reason", "final"), [(StopReason.CANCELLED, "cancelled"), (StopReason.SHUTDOWN, "queued")]
)
async def test_a_run_stopped_before_its_first_step_still_leaves_and_gets_its_outcome(
    dsn: str, db: asyncpg.Connection, registry: TaskRegistry, reason: StopReason, final: str
) -> None:
    # A cancel (NOTIFY or poll) or the shutdown's stop can land between a claim starting a job's
    # task and that task's first step: the run never began, so its own cleanup never ran.
    async with Engine(make_settings(dsn, lease_s=30), registry, dsn) as engine:
        claimed = await _claimed(db, engine, "noop", {})
        async with asyncio.TaskGroup() as jobs:
            _service(engine, Producer)._start(jobs, claimed, time.monotonic() + 30)
            assert engine.running.stop(claimed.id, reason)
        await wait_until(lambda: claimed.id not in engine.running.ids(), 5)
        await wait_until(
            lambda: db.fetchval("SELECT state = $2 FROM jobs WHERE id = $1", claimed.id, final), 10
        )
    # Never begun: a hand-back leaves its attempt unused; a cancel ends it at the attempt claimed.
    assert await db.fetchval("SELECT attempts FROM jobs WHERE id = $1", claimed.id) == (
        0 if reason is StopReason.SHUTDOWN else 1
    )
