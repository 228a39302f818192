"""``ctx.enqueue`` makes each child once per parent: known by the call's key, or by its place among
the run's calls without one, a parent run again gets the children it made before back."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from skiplock.queue import Engine
from skiplock.queue._statements import JOBS
from tests.factories import job
from tests.integration.test_engine import finished
from tests.support import outcome_tasks

assert outcome_tasks.enqueues_children.name == "enqueues_children"  # imported: in the registry


async def children(engine: Engine, parent_id: int) -> list[Any]:
    rows = await engine.client.pool.fetch(
        "SELECT id, child_key FROM jobs WHERE parent_id = $1 ORDER BY id", parent_id
    )
    return [(r["id"], r["child_key"]) for r in rows]


async def run_parent(engine: Engine, **args: Any) -> tuple[int, list[list[Any]]]:
    parent = await engine.client.enqueue("enqueues_children", args)
    assert await finished(engine, parent.id) == "succeeded"
    done = await engine.client.get(parent.id)
    return parent.id, done.result


@pytest.mark.parametrize("in_transaction", [False, True])
async def test_a_retried_parent_creates_its_child_once(engine: Engine, in_transaction: bool) -> None:
    parent_id, made = await run_parent(engine, keys=[None], fail_attempts=1, in_transaction=in_transaction)
    assert (await engine.client.get(parent_id)).attempts == 2
    ((child_id, _),) = await children(engine, parent_id)
    assert made == [[child_id, False]]  # attempt 2 got attempt 1's child back
    child = await engine.client.get(child_id)
    assert child.parent_id == parent_id


async def test_calls_without_a_key_make_one_child_each_and_the_same_ones_on_every_retry(
    engine: Engine,
) -> None:
    parent_id, made = await run_parent(engine, keys=[None, None], fail_attempts=2)
    assert (await engine.client.get(parent_id)).attempts == 3
    made_before = await children(engine, parent_id)
    assert [key for _, key in made_before] == ["call:1", "call:2"]
    assert made == [[made_before[0][0], False], [made_before[1][0], False]]


async def test_a_key_given_twice_in_one_run_returns_the_same_child(engine: Engine) -> None:
    parent_id, made = await run_parent(engine, keys=["a", None, "a"], fail_attempts=0)
    (keyed, _), (unkeyed, _) = sorted(await children(engine, parent_id), key=lambda c: c[1], reverse=True)
    assert made == [[keyed, True], [unkeyed, True], [keyed, False]]


async def test_a_new_child_whose_unique_key_is_held_gets_the_live_job_not_recorded_as_its_child(
    engine: Engine,
) -> None:
    holder = await engine.client.enqueue("noop", queue="nobody", unique_key="u")
    parent_id, made = await run_parent(engine, keys=["a"], fail_attempts=1, unique_key="u")
    assert made == [[holder.id, False]]
    assert await children(engine, parent_id) == []


async def test_a_child_comes_back_whatever_its_state_without_its_unique_key_looked_at(
    tx: asyncpg.Connection,
) -> None:
    parent = await job(tx)
    params: list[Any] = ["nobody", "noop", {}, 0, None, None, 3, None, "u", None, False, None, None, None]
    first = await tx.fetchrow(JOBS.job_insert_child, *params, parent, "key:a")
    assert first is not None
    assert first["created"]
    await tx.execute("UPDATE jobs SET state = 'succeeded' WHERE id = $1", first["id"])
    other = await tx.fetchrow(JOBS.job_insert, *params[:9], None, False, None, None, None)  # now holds 'u'
    assert other is not None
    assert other["created"]
    again = await tx.fetchrow(JOBS.job_insert_child, *params, parent, "key:a")
    assert again is not None
    assert (again["id"], again["created"]) == (first["id"], False)
    another = await tx.fetchrow(JOBS.job_insert_child, *params, parent, "key:b")  # new: 'u' is held
    assert another is not None
    assert (another["id"], another["created"]) == (other["id"], False)
