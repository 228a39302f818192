"""Workflows across worker processes: a chord's callback runs exactly once, whatever the number of
replicas, and a worker killed in the middle changes nothing but attempts."""

from __future__ import annotations

import signal
import time

import asyncpg
import pytest

from skiplock.queue import Client
from skiplock.queue.workflows import chord, group
from tests.support import tasks as test_tasks
from tests.support.waiting import wait_until
from tests.support.workers import start_worker, stop_worker

pytestmark = pytest.mark.slow

STEPS = 1000


async def test_a_chord_over_three_workers_one_killed_runs_its_callback_once(
    dsn: str, db: asyncpg.Connection
) -> None:
    workers = [start_worker(dsn, concurrency="20", lease_s="2") for _ in range(3)]
    killed_at: float | None = None
    try:
        async with await Client.connect(dsn) as client:
            flow = chord(
                group(
                    *(test_tasks.record_slowly.step({"marker": "g", "seconds": 0.02}) for _ in range(STEPS))
                ),
                test_tasks.count_upstream.step({"marker": "callback"}, name="callback"),
            )
            started = await client.start(flow)
            assert started.steps_total == STEPS + 1
            # a third of the way through, one worker dies with the steps it holds
            victim = f"%:{workers[0].pid}:%"
            await wait_until(
                lambda: db.fetchval(
                    "SELECT count(*) FILTER (WHERE state = 'succeeded') >= $2"
                    " AND count(*) FILTER (WHERE lease_owner LIKE $3) >= 5"
                    " FROM jobs WHERE workflow_id = $1",
                    started.id,
                    STEPS // 3,
                    victim,
                ),
                90,
                0.01,
            )
            stop_worker(workers[0], signal.SIGKILL)
            killed_at = time.monotonic()
            info = await wait_until(
                lambda: _final(client, started.id),
                120,
                0.2,
            )
        assert (info.state, info.succeeded, info.failed, info.cancelled) == ("succeeded", STEPS + 1, 0, 0)
        callback = await db.fetchrow(
            "SELECT id, result, attempts FROM jobs WHERE workflow_id = $1 AND step = 'callback'", started.id
        )
        assert callback is not None
        assert callback["result"] == {"count": STEPS, "succeeded": STEPS}
        runs = await db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = $1", callback["id"])
        assert runs == 1, "the callback ran more than once"
        # every step ran; one the killed worker held ran again elsewhere at a later attempt (the
        # unique (job, attempt) row: never twice at one attempt); a claim it never began shows
        # only as an attempt
        per_step = await db.fetch(
            "SELECT j.attempts, count(r.id) AS runs FROM jobs j JOIN test_runs r ON r.job_id = j.id"
            " WHERE j.workflow_id = $1 AND r.marker = 'g' GROUP BY j.id, j.attempts",
            started.id,
        )
        assert len(per_step) == STEPS
        assert all(1 <= r["runs"] <= r["attempts"] for r in per_step)
        rerun = sum(1 for r in per_step if r["attempts"] > 1)
        held = await db.fetchval(
            'SELECT count(*) FROM jobs WHERE workflow_id = $1 AND errors @> \'[{"type": "LeaseLost"}]\'',
            started.id,
        )
        assert held == rerun
        print(
            f"\n{STEPS}-step chord over 3 workers, one killed: {rerun} steps it held ran again, callback once"
        )
        assert killed_at is not None
    finally:  # the killed one too, should the test have failed before it was killed
        stop_worker(workers[0], signal.SIGKILL)
        for worker in workers[1:]:
            assert stop_worker(worker) == 0


async def _final(client: Client, workflow_id: int) -> object:
    info = await client.workflow(workflow_id)
    return info if info.is_final else None
