"""``raise Snooze(seconds)``: the job goes back to its queue for that long, with no error and
without using up an attempt (attempts stay counted, max_attempts grows by one)."""

from __future__ import annotations

from typing import Any

import pytest

from skiplock import Snooze
from skiplock.queue import Engine, JobState
from tests.integration.test_engine import finished
from tests.support import outcome_tasks
from tests.support.waiting import wait_until

assert outcome_tasks.snoozes.name == "snoozes"  # imported: its tasks are in the registry


async def state_events(engine: Engine, job_id: int) -> list[Any]:
    return await engine.client.pool.fetch(
        "SELECT at, data FROM job_events WHERE job_id = $1 AND kind = 'state' ORDER BY seq", job_id
    )


@pytest.mark.parametrize("task", ["snoozes", "snoozes_in_thread"])
async def test_a_job_snoozed_three_times_on_one_attempt_still_succeeds(engine: Engine, task: str) -> None:
    job = await engine.client.enqueue(task, {"times": 3, "seconds": 0.05}, max_attempts=1)
    assert await finished(engine, job.id) == "succeeded"
    done = await engine.client.get(job.id)
    assert done.errors == []
    assert (done.attempts, done.max_attempts) == (4, 4)  # numbers stay unique; none held against it
    assert done.result == {"attempt": 4, "max_attempts": 4}
    states = [(e["data"]["state"], e["data"]["attempt"]) for e in await state_events(engine, job.id)]
    assert states == [
        ("running", 1), ("queued", 1), ("running", 2), ("queued", 2),
        ("running", 3), ("queued", 3), ("running", 4), ("succeeded", 4),
    ]  # fmt: skip
    assert all("error" not in e["data"] for e in await state_events(engine, job.id))


async def test_a_snoozed_job_runs_again_after_its_seconds(engine: Engine) -> None:
    job = await engine.client.enqueue("snoozes", {"times": 1, "seconds": 0.8})
    assert await finished(engine, job.id) == "succeeded"
    events = await state_events(engine, job.id)
    snoozed = next(e for e in events if e["data"]["state"] == "queued")
    again = next(e for e in events if e["data"]["state"] == "running" and e["data"]["attempt"] == 2)
    waited = (again["at"] - snoozed["at"]).total_seconds()
    assert 0.8 <= waited < 3.0, waited


async def test_a_job_cancelled_while_snoozed_never_runs_again(engine: Engine) -> None:
    job = await engine.client.enqueue("snoozes", {"times": 1, "seconds": 30})

    async def snoozed() -> bool:
        current = await engine.client.get(job.id)
        return current.state == JobState.QUEUED and current.attempts == 1

    await wait_until(snoozed)
    assert (await engine.client.cancel(job.id)).state == "cancelled"
    done = await engine.client.get(job.id)
    assert (done.state, done.attempts, done.errors) == ("cancelled", 1, [])


def test_a_snooze_needs_finite_non_negative_seconds() -> None:
    assert Snooze(0).seconds == 0.0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number of seconds"):
            Snooze(bad)
