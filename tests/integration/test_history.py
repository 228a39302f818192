"""History out of the claim's table (migration 0028): a job's end moves its row from jobs_live to
a time range of jobs_done in the same statement, retention drops whole ranges (no DELETE), events
follow, and a writer that waited on a row someone moved runs again instead of failing."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta

import asyncpg
import pytest

from skiplock.db.pool import connect, create_pool
from skiplock.errors import InvalidStateError
from skiplock.queue import Engine
from skiplock.queue._pruner import Pruner, range_width_s
from skiplock.queue._statements import JOBS, JobHeartbeat, JobInsert, insert_child_job, renew_leases
from skiplock.queue.models import JobState
from skiplock.queue.workflows import Step, Workflow
from tests.factories import job
from tests.support.waiting import wait_until

RETENTION_S = 3600.0  # ranges of 900 s


async def partition_of(db: asyncpg.Connection, job_id: int) -> str | None:
    name: str | None = await db.fetchval("SELECT tableoid::regclass::text FROM jobs WHERE id = $1", job_id)
    return name


async def ranges(db: asyncpg.Connection, parent: str) -> list[str]:
    return [
        r["relid"]
        for r in await db.fetch(
            "SELECT relid::text FROM pg_partition_tree($1::regclass) WHERE isleaf ORDER BY 1", parent
        )
    ]


async def deletes(db: asyncpg.Connection) -> int:
    """Rows deleted from any part of jobs so far, as the statistics system counts them."""
    await db.execute("SELECT pg_stat_force_next_flush()")
    count: int = await db.fetchval(
        "SELECT coalesce(sum(s.n_tup_del), 0)::bigint FROM pg_partition_tree('jobs') AS p"
        " JOIN pg_stat_user_tables AS s ON s.relid = p.relid"
    )
    return count


def test_a_range_is_about_an_eighth_of_the_retention() -> None:
    assert range_width_s(60) == 60
    assert range_width_s(3600) == 900
    assert range_width_s(7 * 86_400) == 86_400
    assert range_width_s(365 * 86_400) == 86_400


async def test_an_ended_job_leaves_the_live_table_in_the_statement_that_ends_it(
    engine: Engine, db: asyncpg.Connection
) -> None:
    done = await engine.client.enqueue("echo", {"n": 1})
    later = await engine.client.enqueue("echo", {"n": 2}, delay_s=3600)
    await wait_until(lambda: _state(db, done.id, "succeeded"), 10)
    assert await partition_of(db, done.id) != "jobs_live"
    assert (await partition_of(db, done.id) or "").startswith("jobs_done")
    assert await partition_of(db, later.id) == "jobs_live"
    # The claim's table and its index hold only what is live.
    assert await db.fetchval("SELECT count(*) FROM jobs_live WHERE id = $1", done.id) == 0
    # Read through jobs as before: by id, in lists, with its events.
    assert (await engine.client.get(done.id)).state == "succeeded"
    assert (await engine.client.get(later.id)).state == "queued"
    events = await db.fetch("SELECT data FROM job_events WHERE job_id = $1 ORDER BY seq", done.id)
    assert [e["data"]["state"] for e in events] == ["running", "succeeded"]
    # A retry moves it back; it runs again and ends in the history again, once.
    await engine.client.cancel(later.id)
    assert (await partition_of(db, later.id) or "").startswith("jobs_done")
    await engine.client.retry(later.id)
    assert await partition_of(db, later.id) == "jobs_live"
    both = [done.id, later.id]
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE id = ANY($1::bigint[])", both) == 2


async def _state(db: asyncpg.Connection, job_id: int, state: str) -> bool | None:
    return (await db.fetchval("SELECT state::text FROM jobs WHERE id = $1", job_id)) == state or None


async def test_retention_drops_whole_ranges_with_their_events_and_deletes_nothing(
    dsn: str, db: asyncpg.Connection
) -> None:
    start: datetime = await db.fetchval("SELECT now() - interval '3 hours'")
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        pruner = Pruner(pool, retention_s=RETENTION_S, interval_s=60)
        await pruner.maintain_ranges(start)  # ranges from the next boundary after `start` on
        made = await db.fetch("SELECT name, parent, lower, upper FROM history_partitions ORDER BY lower")
        assert {r["parent"] for r in made} == {"jobs_done", "job_events"}
        assert all(r["upper"] - r["lower"] == timedelta(seconds=900) for r in made)
        first = min(r["lower"] for r in made)
        options = await db.fetch(
            "SELECT reloptions FROM pg_class WHERE relname = ANY($1::text[])", [r["name"] for r in made]
        )
        assert len(options) == len(made)
        assert all("autovacuum_vacuum_insert_scale_factor=0.05" in (o["reloptions"] or ()) for o in options)
        inside = first + timedelta(minutes=1)
        old = [await job(db, JobState.SUCCEEDED, finished_at=inside) for _ in range(3)]
        for job_id in old:
            await db.execute(
                "INSERT INTO job_events (job_id, seq, kind, data, at) VALUES ($1, 1, 'log', '{}', $2)",
                job_id,
                inside,
            )
        recent = await job(db, JobState.SUCCEEDED)
        await db.execute(
            "INSERT INTO job_events (job_id, seq, kind, data) VALUES ($1, 1, 'log', '{}')", recent
        )
        range_name = await partition_of(db, old[0])
        assert range_name is not None
        assert range_name.startswith("jobs_done_2")
        await db.execute(f'ANALYZE "{range_name}"')
        deleted_before = await deletes(db)
        # Its range ended more than the retention ago: dropped whole, its events' range with it.
        assert await pruner.prune_once() == 3
        assert await deletes(db) == deleted_before  # not one row deleted
        assert range_name not in await ranges(db, "jobs")
        assert await db.fetchval("SELECT count(*) FROM jobs WHERE id = ANY($1::bigint[])", old) == 0
        assert await db.fetchval("SELECT count(*) FROM job_events WHERE job_id = ANY($1::bigint[])", old) == 0
        assert await db.fetchval("SELECT count(*) FROM jobs WHERE id = $1", recent) == 1
        assert await db.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", recent) == 1
        # The next ranges exist ahead of now, so an outcome never waits on one being made.
        now: datetime = await db.fetchval("SELECT now()")
        ahead = await db.fetchval("SELECT max(upper) FROM history_partitions WHERE parent = 'jobs_done'")
        assert ahead >= now + timedelta(seconds=900)
        assert await pruner.prune_once() == 0  # nothing more to drop
    finally:
        await pool.close()


async def test_a_dropped_ranges_steps_of_a_running_workflow_are_kept(
    engine: Engine, dsn: str, db: asyncpg.Connection
) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        pruner = Pruner(pool, retention_s=RETENTION_S, interval_s=60)
        await pruner.maintain_ranges(await db.fetchval("SELECT now() - interval '3 hours'"))
        inside = await db.fetchval("SELECT min(lower) + interval '1 minute' FROM history_partitions")
        running = await engine.client.start(
            Workflow(
                steps=(
                    Step("first", "echo", {}),
                    Step("slow", "sleep", {"seconds": 30, "steps": 300}, after=("first",)),
                )
            )
        )
        first_id = next(s.job_id for s in running.steps or [] if s.name == "first")
        assert first_id is not None
        await wait_until(lambda: _state(db, first_id, "succeeded"), 10)
        plain = await job(db, JobState.SUCCEEDED, finished_at=inside)
        # The step ended in that range too (a move within the history is no step's end).
        await db.execute("UPDATE jobs SET finished_at = $2 WHERE id = $1", first_id, inside)
        info = await engine.client.workflow(running.id)
        assert (info.succeeded, info.state) == (1, "running")
        range_name = await partition_of(db, first_id)
        assert range_name == await partition_of(db, plain)
        assert range_name is not None
        assert range_name.startswith("jobs_done_2")
        await pruner.prune_once()
        assert range_name not in await ranges(db, "jobs")
        assert await db.fetchval("SELECT count(*) FROM jobs WHERE id = $1", plain) == 0
        # The step stays (its dependents and a retry read it), now outside any range.
        assert await partition_of(db, first_id) == "jobs_done_default"
        assert await db.fetchval("SELECT state::text FROM jobs WHERE id = $1", first_id) == "succeeded"
        info = await engine.client.workflow(running.id)
        assert (info.succeeded, info.state) == (1, "running")  # kept, not counted again
        await engine.client.cancel_workflow(running.id)
    finally:
        await pool.close()


async def test_the_first_range_begins_after_what_the_default_partition_holds(
    dsn: str, db: asyncpg.Connection
) -> None:
    """Jobs that ended while no range existed stay in the default partition: a range made later
    must not overlap them (PostgreSQL would refuse to attach it), and the ranges after it align."""
    ended = await job(db, JobState.SUCCEEDED)
    newest: datetime = await db.fetchval("SELECT finished_at FROM jobs WHERE id = $1", ended)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        await Pruner(pool, retention_s=RETENTION_S, interval_s=60).maintain_ranges()
    finally:
        await pool.close()
    made = await db.fetch(
        "SELECT lower, upper FROM history_partitions WHERE parent = 'jobs_done' ORDER BY lower"
    )
    assert made
    assert made[0]["lower"] > newest
    assert all(r["upper"].timestamp() % 900 == 0 for r in made)
    assert all(a["upper"] == b["lower"] for a, b in itertools.pairwise(made))
    assert await partition_of(db, ended) == "jobs_done_default"
    later = await job(db, JobState.SUCCEEDED)
    assert (await partition_of(db, later) or "").startswith("jobs_done_2")


async def test_a_heartbeat_that_waited_on_a_job_someone_ended_renews_the_others(dsn: str) -> None:
    """The lease keeper's statement waits for the row lock of an outcome being written; the
    outcome moves the row to the history, and the heartbeat, run again, renews the rest."""
    admin = await asyncpg.connect(dsn)
    beat = await connect(dsn)
    try:
        ids = [await job(admin, JobState.RUNNING, lease_owner="w1") for _ in range(3)]
        ending = await asyncpg.connect(dsn)
        tx = ending.transaction()
        await tx.start()
        await ending.execute("UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE id = $1", ids[1])
        heartbeat = asyncio.create_task(
            renew_leases(
                beat,
                JobHeartbeat(ids=ids, owner="w1", lease_s=30, attempts=[1, 1, 1], shard=0),
                statement_timeout_s=10,
            )
        )
        await wait_until(lambda: _waiting_on_lock(admin), 10)
        await tx.commit()
        kept = await asyncio.wait_for(heartbeat, 10)
        assert kept == {ids[0], ids[2]}
        await ending.close()
    finally:
        await beat.close()
        await admin.close()


async def _waiting_on_lock(db: asyncpg.Connection) -> bool | None:
    waiting: int = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    return waiting > 0 or None


async def test_a_cancel_that_waited_on_the_jobs_end_is_refused_as_ended(
    engine: Engine, db: asyncpg.Connection
) -> None:
    job_id = await job(db, JobState.RUNNING, lease_owner="elsewhere")
    ending = await asyncpg.connect(engine.settings.database_url or "")
    try:
        tx = ending.transaction()
        await tx.start()
        await ending.execute("UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE id = $1", job_id)
        cancel = asyncio.create_task(engine.client.cancel(job_id))
        await wait_until(lambda: _waiting_on_lock(db), 10)
        await tx.commit()
        with pytest.raises(InvalidStateError):
            await asyncio.wait_for(cancel, 10)
    finally:
        await ending.close()
    assert (await engine.client.get(job_id)).state == "succeeded"


async def test_an_enqueue_finds_a_unique_key_only_among_live_jobs_and_a_tick_or_child_in_history(
    db: asyncpg.Connection,
) -> None:
    """The unique indexes are the live table's: an ended job frees its unique_key (as before),
    and an ended schedule tick or child is still found by the insert statements themselves."""
    ended = await job(db, JobState.SUCCEEDED, unique_key="k")
    row = await db.fetchrow(
        JOBS.job_insert, "default", "noop", {}, 0, None, None, 3, None, "k", None, False, None, None, None
    )
    assert row is not None
    assert (row["created"], row["id"] != ended) == (True, True)
    again = await db.fetchrow(
        JOBS.job_insert, "default", "noop", {}, 0, None, None, 3, None, "k", None, False, None, None, None
    )
    assert again is not None
    assert (again["created"], again["id"]) == (False, row["id"])
    parent = await job(db, JobState.RUNNING)
    child = await job(db, JobState.SUCCEEDED, parent_id=parent, child_key="c")
    found = await db.fetchrow(
        JOBS.job_insert_child,
        "default",
        "noop",
        {},
        0,
        None,
        None,
        3,
        None,
        None,
        None,
        False,
        None,
        None,
        None,
        parent,
        "c",
    )
    assert found is not None
    assert (found["created"], found["id"]) == (False, child)


async def test_a_child_that_ends_while_its_parent_makes_it_again_stays_the_one_child(
    dsn: str, db: asyncpg.Connection
) -> None:
    """A parent run again (a rescue) asks for its child under the same key while the first run's
    child is ending: the insert waits for the child's row, which then leaves the live table, so
    neither its conflict nor its look at the history (taken before the move committed) saw it. The
    twin is found after the insert, which is undone: one child per key, as before."""
    parent = await job(db, JobState.RUNNING, lease_owner="w")
    child = await job(db, JobState.RUNNING, lease_owner="w", parent_id=parent, child_key="c")
    params = JobInsert(
        queue="default",
        task="noop",
        args={},
        priority=0,
        run_at=None,
        delay_s=None,
        max_attempts=3,
        timeout_s=None,
        unique_key=None,
        origin=None,
        wake_later=False,
    )
    ending = await asyncpg.connect(dsn)
    again = await connect(dsn)
    try:
        tx = ending.transaction()
        await tx.start()
        await ending.execute("UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE id = $1", child)

        async def insert() -> asyncpg.Record | None:
            async with again.transaction():
                return await insert_child_job(again, params, parent, "c")

        made = asyncio.create_task(insert())
        await wait_until(lambda: _waiting_on_lock(db), 10)
        await tx.commit()
        record = await asyncio.wait_for(made, 10)
    finally:
        await ending.close()
        await again.close()
    assert record is not None
    assert (record["id"], record["created"]) == (child, False)
    rows = await db.fetch("SELECT id FROM jobs WHERE parent_id = $1 AND child_key = 'c'", parent)
    assert [r["id"] for r in rows] == [child]


async def test_a_dropped_ranges_steps_of_an_ended_workflow_go_with_their_edges_and_workflow(
    engine: Engine, dsn: str, db: asyncpg.Connection
) -> None:
    """Edges went by the pruner's DELETE of their step (a trigger); a range's DROP fires none, so
    the drop deletes them itself, and the workflow, its steps gone, is pruned after them."""
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        pruner = Pruner(pool, retention_s=RETENTION_S, interval_s=60)
        await pruner.maintain_ranges(await db.fetchval("SELECT now() - interval '3 hours'"))
        inside = await db.fetchval("SELECT min(lower) + interval '1 minute' FROM history_partitions")
        started = await engine.client.start(
            Workflow(steps=(Step("a", "echo", {}), Step("b", "echo", {}, after=("a",))))
        )

        async def ended() -> bool | None:
            return (await engine.client.workflow(started.id)).is_final or None

        await wait_until(ended, 10)
        steps = [s.job_id for s in started.steps or []]
        assert await db.fetchval("SELECT count(*) FROM job_deps WHERE job_id = ANY($1::bigint[])", steps) == 1
        await db.execute("UPDATE jobs SET finished_at = $2 WHERE workflow_id = $1", started.id, inside)
        await db.execute("UPDATE workflows SET finished_at = $2 WHERE id = $1", started.id, inside)
        await pruner.prune_once()
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", started.id) == 0
    assert await db.fetchval("SELECT count(*) FROM job_deps WHERE job_id = ANY($1::bigint[])", steps) == 0
    assert await db.fetchval("SELECT count(*) FROM workflows WHERE id = $1", started.id) == 0
