"""workflows: a 10,000-step chord's callback (a group of 9,999 and it), a 1,000-step chain, and what
the feature costs a plain drain (the step-ended trigger enabled as shipped, against the same drain
without it).

One `skiplock worker` (default settings) runs everything; times are the database's (started_at,
finished_at), so start-up and this loop's polling are not counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from bench.drain import drain
from bench.floor import DRAIN_JOBS
from bench.processes import skiplock
from bench.runner import REPEATS, Bench, median_of
from bench.tasks import bench_noop
from skiplock.db.pool import create_pool
from skiplock.queue import Client, TaskRegistry
from skiplock.queue.workflows import Workflow, chain, chord, group

TIMEOUT_S = 300
GROUP_STEPS = (9_999, 1_999)  # with its callback, a workflow's most steps (10,000)
CHAIN_STEPS = (1_000, 200)
WITHOUT_TRIGGER = "ALTER TABLE jobs_live DISABLE TRIGGER jobs_workflow_step_ended"  # jobs_live's since 0028
Measure = Callable[[asyncpg.Pool, int], Awaitable[float]]


async def run(bench: Bench) -> None:
    width = bench.size(*GROUP_STEPS)
    gap = await _run_workflow(
        bench,
        chord(group(*(bench_noop.step() for _ in range(width))), bench_noop.step(name="callback")),
        _chord_gap,
    )
    bench.record(
        "workflows", f"chord callback after a {width}-step group", gap * 1000, "ms", target="<= 1000 ms"
    )
    length = bench.size(*CHAIN_STEPS)
    rate = await _run_workflow(bench, chain(*(bench_noop.step() for _ in range(length))), _chain_rate)
    bench.record("workflows", f"{length}-step chain", rate, "steps/s", target=">= 300 steps/s")
    count = bench.size(*DRAIN_JOBS)
    shipped = await median_of(REPEATS, lambda: drain(bench, count, 1))
    without = await median_of(REPEATS, lambda: drain(bench, count, 1, setup=WITHOUT_TRIGGER))
    bench.record(
        "workflows",
        "drain, no workflow (vs the trigger disabled)",
        100 * shipped / without,
        "%",
        target=">= 95 %",
    )


async def _run_workflow(bench: Bench, workflow: Workflow, measure: Measure) -> float:
    async with bench.database() as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            client = Client(pool, TaskRegistry([bench_noop]))
            with skiplock(dsn, "worker"):
                started = await client.start(workflow)
                deadline = time.monotonic() + TIMEOUT_S
                while not (await client.workflow(started.id)).is_final:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the workflow did not finish")
                    await asyncio.sleep(0.1)
            value: float = await measure(pool, started.id)
        finally:
            await pool.close()
    return value


async def _chord_gap(pool: asyncpg.Pool, workflow_id: int) -> float:
    """From the last group step's outcome to the callback's start."""
    gap: float = await pool.fetchval(
        "SELECT extract(epoch FROM (SELECT started_at FROM jobs WHERE workflow_id = $1 AND step = 'callback')"
        " - (SELECT max(finished_at) FROM jobs WHERE workflow_id = $1 AND step <> 'callback'))",
        workflow_id,
    )
    return float(gap)


async def _chain_rate(pool: asyncpg.Pool, workflow_id: int) -> float:
    row = await pool.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM max(finished_at) - min(started_at)) AS span"
        " FROM jobs WHERE workflow_id = $1",
        workflow_id,
    )
    assert row is not None
    return float(row["n"]) / float(row["span"])
