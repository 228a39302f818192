"""Workflows on a real database: chain, group, chord and a diamond run with their results passed
along; failure under both policies; cancel and retry; a bad workflow writes nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from skiplock.errors import InvalidStateError, WorkflowInvalid, WorkflowNotFound
from skiplock.queue import Engine
from skiplock.queue.workflows import Step, Workflow, WorkflowInfo, chain, chord, group
from tests.support.waiting import wait_until


def echo(name: str = "", after: tuple[str, ...] = (), **args: Any) -> Step:
    return Step(name=name, task="echo", args=args, after=after)


async def ended(engine: Engine, workflow_id: int, timeout: float = 15.0) -> WorkflowInfo:
    async def done() -> WorkflowInfo | None:
        info = await engine.client.workflow(workflow_id)
        return info if info.is_final else None

    found: WorkflowInfo = await wait_until(done, timeout)
    return found


async def results(db: asyncpg.Connection, workflow_id: int) -> dict[str, Any]:
    rows = await db.fetch("SELECT step, state::text, result FROM jobs WHERE workflow_id = $1", workflow_id)
    return {r["step"]: (r["state"], r["result"]) for r in rows}


async def test_a_chain_passes_each_result_to_the_next(engine: Engine, db: asyncpg.Connection) -> None:
    started = await engine.client.start(chain(echo(n=1), echo(n=2), echo(n=3)))
    assert [s.name for s in started.steps or []] == ["0", "1", "2"]
    assert [s.state for s in started.steps or []] == ["queued", "waiting", "waiting"]
    info = await ended(engine, started.id)
    assert (info.state, info.succeeded, info.progress) == ("succeeded", 3, 1.0)
    got = await results(db, started.id)
    assert got["0"] == ("succeeded", {"args": {"n": 1}, "upstream": {}})
    assert got["1"] == (
        "succeeded",
        {"args": {"n": 2}, "upstream": {"0": {"args": {"n": 1}, "upstream": {}}}},
    )
    assert got["2"][1]["upstream"]["1"]["args"] == {"n": 2}
    assert await engine.client.workflow_result(started.id) == {"2": got["2"][1]}


async def test_a_chord_callback_gets_the_group_in_order_once_all_of_it_succeeded(
    engine: Engine, db: asyncpg.Connection
) -> None:
    flow = chord(group(*(echo(i=i) for i in range(20))), echo("total"))
    started = await engine.client.start(flow)
    info = await ended(engine, started.id)
    assert info.state == "succeeded"
    total = (await results(db, started.id))["total"]
    assert total[0] == "succeeded"
    assert list(total[1]["upstream"]) == [str(i) for i in range(20)]
    assert [v["args"]["i"] for v in total[1]["upstream"].values()] == list(range(20))
    # the callback was queued once: one state event into queued, from waiting
    callback_id = next(s.job_id for s in info.steps or [] if s.name == "total")
    moves = await db.fetch(
        "SELECT data->>'previous' AS previous FROM job_events"
        " WHERE job_id = $1 AND data->>'state' = 'queued'",
        callback_id,
    )
    assert [m["previous"] for m in moves] == ["waiting"]


async def test_a_step_sees_its_dependencies_in_the_order_of_its_after(
    engine: Engine, db: asyncpg.Connection
) -> None:
    names = ["zeta", "alpha", "mid", "b", "aa"]
    flow = chord(group(*(echo(n) for n in names)), Step("join", "upstream_order"))
    started = await engine.client.start(flow)
    assert (await ended(engine, started.id)).state == "succeeded"
    assert (await results(db, started.id))["join"][1] == names


async def test_a_diamond_runs_its_join_after_both_branches(engine: Engine, db: asyncpg.Connection) -> None:
    flow = Workflow(
        steps=(
            echo("d", after=("b", "c")),
            echo("b", after=("a",)),
            echo("a"),
            echo("c", after=("a",)),
        ),
        name="diamond",
    )
    started = await engine.client.start(flow)
    # inserted dependencies first, whatever order they were given in
    ids = {s.name: s.job_id for s in started.steps or []}
    assert ids["a"] < ids["b"] < ids["d"]
    assert ids["c"] < ids["d"]
    assert {s.name: s.after for s in started.steps or []}["d"] == ["b", "c"]
    info = await ended(engine, started.id)
    assert info.state == "succeeded"
    got = await results(db, started.id)
    assert list(got["d"][1]["upstream"]) == ["b", "c"]
    runs = await db.fetch("SELECT step, started_at, finished_at FROM jobs WHERE workflow_id = $1", started.id)
    at = {r["step"]: r for r in runs}
    assert at["d"]["started_at"] >= max(at["b"]["finished_at"], at["c"]["finished_at"])
    assert min(at["b"]["started_at"], at["c"]["started_at"]) >= at["a"]["finished_at"]


async def test_a_failed_step_cancels_what_depends_on_it_and_nothing_else(
    engine: Engine, db: asyncpg.Connection
) -> None:
    flow = Workflow(
        steps=(
            echo("bad", fail=True),
            echo("below", after=("bad",)),
            echo("further", after=("below",)),
            echo("aside"),
            echo("after_aside", after=("aside",)),
        )
    )
    started = await engine.client.start(flow)
    info = await ended(engine, started.id)
    assert (info.state, info.succeeded, info.failed, info.cancelled) == ("failed", 2, 1, 2)
    got = await results(db, started.id)
    assert {k: v[0] for k, v in got.items()} == {
        "bad": "failed", "below": "cancelled", "further": "cancelled", "aside": "succeeded",
        "after_aside": "succeeded",
    }  # fmt: skip
    error = await db.fetchval(
        "SELECT errors -> -1 FROM jobs WHERE workflow_id = $1 AND step = 'below'", started.id
    )
    assert error["type"] == "UpstreamFailed"
    assert "bad" in error["message"]
    never_ran = await db.fetchval(
        "SELECT count(*) FROM jobs WHERE workflow_id = $1 AND state = 'cancelled' AND started_at IS NOT NULL",
        started.id,
    )
    assert never_ran == 0


async def test_under_continue_dependents_run_and_see_the_failure(
    engine: Engine, db: asyncpg.Connection
) -> None:
    flow = chord(group(echo("ok"), echo("bad", fail=True)), echo("after"), on_failure="continue")
    started = await engine.client.start(flow)
    info = await ended(engine, started.id)
    assert info.state == "failed"  # one step failed, though every step ran
    after = (await results(db, started.id))["after"]
    assert after[0] == "succeeded"
    assert after[1]["upstream"]["ok"] == {"args": {}, "upstream": {}}
    seen = after[1]["upstream"]["bad"]
    assert seen["state"] == "failed"
    assert seen["error"]["message"] == "echo failed on purpose"


async def test_cancel_stops_every_step_not_finished_and_retry_runs_them_again(
    engine: Engine, db: asyncpg.Connection
) -> None:
    flow = chain(Step("slow", "sleep", {"seconds": 30, "steps": 300}), echo("next"))
    started = await engine.client.start(flow)
    slow_id = next(s.job_id for s in started.steps or [] if s.name == "slow")
    await wait_until(lambda: _state(db, slow_id, "running"), 10)
    cancelled = await engine.client.cancel_workflow(started.id)
    assert cancelled.state == "cancelled"
    info = await ended(engine, started.id)
    assert {s.name: s.state for s in info.steps or []} == {"slow": "cancelled", "next": "cancelled"}
    with pytest.raises(InvalidStateError):
        await engine.client.cancel_workflow(started.id)
    # retried: the cancelled steps again; the sleep made short so the workflow can end
    await db.execute('UPDATE jobs SET args = \'{"seconds": 0.01, "steps": 1}\' WHERE id = $1', slow_id)
    again = await engine.client.retry_workflow(started.id)
    assert again.state == "running"
    states = {s.name: s.state for s in again.steps or []}
    assert states["slow"] in {"queued", "running", "succeeded"}  # a worker may have taken it already
    assert states["next"] in {"waiting", "queued", "running", "succeeded"}
    info = await ended(engine, started.id)
    assert (info.state, info.succeeded, info.cancelled) == ("succeeded", 2, 0)
    with pytest.raises(InvalidStateError):
        await engine.client.retry_workflow(started.id)


async def test_retry_runs_failed_steps_and_their_dependents_not_the_succeeded_ones(
    engine: Engine, db: asyncpg.Connection
) -> None:
    flow = Workflow(steps=(echo("a"), echo("b", after=("a",), fail=True), echo("c", after=("b",))))
    started = await engine.client.start(flow)
    assert (await ended(engine, started.id)).state == "failed"
    a_id = next(s.job_id for s in started.steps or [] if s.name == "a")
    await db.execute(
        "UPDATE jobs SET args = '{}' WHERE workflow_id = $1 AND step = 'b'", started.id
    )  # fixed, as an operator would
    await engine.client.retry_workflow(started.id)
    info = await ended(engine, started.id)
    assert info.state == "succeeded"
    assert await db.fetchval("SELECT attempts FROM jobs WHERE id = $1", a_id) == 1  # not run again


@pytest.mark.parametrize(
    ("steps", "says"),
    [
        ((echo("x", after=("y",)), echo("y", after=("x",))), "cycle: x -> y -> x"),
        ((echo("x", after=("nope",)),), "'nope', which is no step"),
        ((echo("x"), echo("x")), "named twice"),
        ((echo("bad name!"),), "steps[0].name"),
        ((echo("x"), Step("y", "no_such_task")), "step 'y'"),
        ((echo("x"), Step("y", "sleep", {"seconds": -1})), "step 'y'"),
        ((), "at least one step"),
    ],
)
async def test_a_bad_workflow_is_refused_and_nothing_is_written(
    engine: Engine, db: asyncpg.Connection, steps: tuple[Step, ...], says: str
) -> None:
    with pytest.raises(WorkflowInvalid) as raised:
        await engine.client.start(Workflow(steps=steps))
    assert says in str(raised.value)
    assert await db.fetchval("SELECT count(*) FROM workflows") == 0
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_more_than_ten_thousand_steps_is_refused(engine: Engine, db: asyncpg.Connection) -> None:
    with pytest.raises(WorkflowInvalid, match="at most 10000"):
        await engine.client.start(group(*(echo() for _ in range(10_001))))
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_an_unknown_workflow_is_not_found(engine: Engine) -> None:
    with pytest.raises(WorkflowNotFound):
        await engine.client.workflow(12345)


async def test_a_workflow_started_in_a_rolled_back_transaction_leaves_nothing(
    engine: Engine, db: asyncpg.Connection
) -> None:
    async with engine.client.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await engine.client.start(chain(echo(), echo()), conn=conn)
        await tx.rollback()
    assert await db.fetchval("SELECT count(*) FROM workflows") == 0
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def _state(db: asyncpg.Connection, job_id: int, state: str) -> bool | None:
    return (await db.fetchval("SELECT state::text FROM jobs WHERE id = $1", job_id)) == state or None


async def test_the_pruner_keeps_a_running_workflows_steps_and_prunes_a_finished_one_whole(
    engine: Engine, dsn: str, db: asyncpg.Connection
) -> None:
    from skiplock.db.pool import create_pool
    from skiplock.queue._pruner import Pruner

    done = await engine.client.start(chain(echo(), echo()))
    assert (await ended(engine, done.id)).state == "succeeded"
    running = await engine.client.start(
        Workflow(
            steps=(echo("first"), Step("slow", "sleep", {"seconds": 30, "steps": 300}, after=("first",)))
        )
    )
    first_id = next(s.job_id for s in running.steps or [] if s.name == "first")
    await wait_until(lambda: _state(db, first_id, "succeeded"), 10)
    await db.execute("UPDATE jobs SET finished_at = now() - interval '2 hours' WHERE finished_at IS NOT NULL")
    await db.execute("UPDATE workflows SET finished_at = now() - interval '2 hours' WHERE id = $1", done.id)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        assert await Pruner(pool, retention_s=3600, interval_s=60, batch=1).prune_once() == 2
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", done.id) == 0
    assert await db.fetchval("SELECT count(*) FROM workflows WHERE id = $1", done.id) == 0
    assert await db.fetchval("SELECT count(*) FROM job_deps WHERE job_id IN (SELECT id FROM jobs)") == 1
    assert await db.fetchval("SELECT count(*) FROM job_deps") == 1  # the finished one's edge went too
    # the running workflow's finished step stays, for its dependents and a retry
    assert await db.fetchval("SELECT state::text FROM jobs WHERE id = $1", first_id) == "succeeded"
    await engine.client.cancel_workflow(running.id)


async def test_a_step_declaring_an_upstream_model_gets_its_dependencies_results_as_it(
    engine: Engine, db: asyncpg.Connection
) -> None:
    flow = chord(group(*(Step("", "give_size", {"size": n}) for n in (1, 2, 3))), Step("sum", "sum_sizes"))
    started = await engine.client.start(flow)
    assert (await ended(engine, started.id)).state == "succeeded"
    assert (await results(db, started.id))["sum"][1] == {"total": 6, "types": ["Sized"]}
    # a result that does not fit the model fails the step at once, naming the step
    bad = await engine.client.start(chord(group(echo("odd", size="big")), Step("sum", "sum_sizes")))
    assert (await ended(engine, bad.id)).state == "failed"
    row = await db.fetchrow(
        "SELECT attempts, errors FROM jobs WHERE workflow_id = $1 AND step = 'sum'", bad.id
    )
    assert row is not None
    assert row["attempts"] == 1
    assert "the result of step 'odd' is not a Sized" in row["errors"][-1]["message"]


async def test_a_long_chain_whose_first_step_fails_is_cancelled_below_it_in_one_walk(
    engine: Engine, db: asyncpg.Connection
) -> None:
    # Each step the cascade cancelled walked all of its own descendants again: a 10,000-step chain
    # took longer than the engine's statement limit to write its first step's outcome.
    steps = 10_000
    started = await engine.client.start(chain(echo(fail=True), *(echo() for _ in range(steps - 1))))
    info = await ended(engine, started.id, timeout=60)
    assert (info.state, info.failed, info.cancelled) == ("failed", 1, steps - 1)
    took = await db.fetchval(
        "SELECT extract(epoch FROM max(finished_at) - min(finished_at)) FROM jobs WHERE workflow_id = $1",
        started.id,
    )
    assert took < 10, f"the cascade took {took:.1f} s"


async def test_cancelling_a_ten_thousand_step_workflow_is_quick(
    engine: Engine, db: asyncpg.Connection
) -> None:
    started = await engine.client.start(
        chain(Step("slow", "sleep", {"seconds": 30, "steps": 300}), *(echo() for _ in range(9_999)))
    )
    slow_id = next(s.job_id for s in started.steps or [] if s.name == "slow")
    await wait_until(lambda: _state(db, slow_id, "running"), 10)
    await engine.client.pool.execute("SET statement_timeout = 0")  # the call's own time is measured
    import time as _time

    began = _time.monotonic()
    cancelled = await engine.client.cancel_workflow(started.id)
    assert _time.monotonic() - began < 10
    assert cancelled.state == "cancelled"
    info = await ended(engine, started.id, timeout=30)
    assert info.cancelled == 10_000


async def test_a_workflow_with_a_step_pruned_cannot_be_retried_and_its_steps_go_together(
    engine: Engine, dsn: str, db: asyncpg.Connection
) -> None:
    from skiplock.db.pool import create_pool
    from skiplock.queue._pruner import Pruner

    started = await engine.client.start(Workflow(steps=(echo("a"), echo("b", after=("a",), fail=True))))
    assert (await ended(engine, started.id)).state == "failed"
    # a ended long ago, b just now: while the workflow ended recently, none of its steps goes
    await db.execute("UPDATE jobs SET finished_at = now() - interval '8 days' WHERE step = 'a'")
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        pruner = Pruner(pool, retention_s=7 * 86400, interval_s=60)
        assert await pruner.prune_once() == 0
        # a step gone (an operator's DELETE, or a pruner of another release): no retry
        await db.execute("DELETE FROM jobs WHERE workflow_id = $1 AND step = 'a'", started.id)
        with pytest.raises(InvalidStateError):
            await engine.client.retry_workflow(started.id)
        info = await engine.client.workflow(started.id)
        assert (info.state, info.finished_at is not None) == ("failed", True)
        # the workflow ended over a week ago: its steps go, then the workflow
        await db.execute(
            "UPDATE workflows SET finished_at = now() - interval '8 days' WHERE id = $1", started.id
        )
        await db.execute(
            "UPDATE jobs SET finished_at = now() - interval '8 days' WHERE workflow_id = $1", started.id
        )
        assert await pruner.prune_once() == 1
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM workflows WHERE id = $1", started.id) == 0


async def test_a_rescue_that_fails_steps_of_two_workflows_ends_both_and_cancels_below(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    """A step whose lease ran out on its last attempt fails as LeaseLost through the rescuer, which
    locks the workflows of what it rescues in id order first; what depends on it is cancelled."""
    from skiplock.db.pool import create_pool
    from skiplock.queue import Client
    from skiplock.queue._rescuer import Rescuer

    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        client = Client(pool, registry)  # no engine: nothing claims the steps
        flows = [await client.start(Workflow(steps=(echo("a"), echo("b", after=("a",))))) for _ in range(2)]
        await db.execute(
            "UPDATE jobs SET state = 'running', attempts = 1, max_attempts = 1, lease_owner = 'gone',"
            " lease_expires_at = now() - interval '1 hour', event_seq = event_seq + 1 WHERE step = 'a'"
        )
        rescued = await Rescuer(pool, interval_s=60, lease_s=1, registry=registry).rescue_once()
        assert rescued == 2
        for flow in flows:
            info = await client.workflow(flow.id)
            assert (info.state, info.failed, info.cancelled) == ("failed", 1, 1)
            assert {s.name: s.state for s in info.steps or []} == {"a": "failed", "b": "cancelled"}
    finally:
        await pool.close()
