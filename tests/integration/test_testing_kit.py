"""The testing kit (skiplock.testing) through its own fixtures, as a user's suite gets them: a fresh
migrated database per test, assertions on what is enqueued, and drain() running the real engine,
workflows and time control (delays, retries' backoff, schedules) included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from skiplock import JobState, Workflow, chain
from skiplock.queue import Client, Step, TaskRegistry
from skiplock.testing import Kit
from tests.support import tasks as suite_tasks
from tests.support.kit_tasks import KIT_TASKS, Flaky, Resize, flaky, hourly, notify, resize


@pytest.fixture
def skiplock_registry() -> TaskRegistry:
    """The kit's tasks but the scheduled one: a drain that began as an hour did would run its tick."""
    return TaskRegistry(t for t in KIT_TASKS if t is not hourly)


async def test_each_test_gets_a_fresh_migrated_database(skiplock_kit: Kit, skiplock_client: Client) -> None:
    assert skiplock_kit.client is skiplock_client
    assert await skiplock_client.pool.fetchval("SELECT count(*) FROM jobs") == 0
    assert await skiplock_client.pool.fetchval("SELECT current_database()") in skiplock_kit.dsn
    await resize.enqueue({"url": "u"})  # the kit's client is the one task.enqueue uses


async def test_assert_enqueued_matches_task_and_args_and_says_what_is_there(skiplock_kit: Kit) -> None:
    await resize.enqueue(Resize(url="https://example.com/a.png", width=64))
    await skiplock_kit.client.enqueue("kit_notify", {"url": "x"}, delay_s=3600)

    [job] = await skiplock_kit.assert_enqueued(resize, {"url": "https://example.com/a.png"})
    assert job.args == {"url": "https://example.com/a.png", "width": 64}
    await skiplock_kit.assert_enqueued("kit_resize", Resize(url="https://example.com/a.png", width=64))
    await skiplock_kit.assert_enqueued(notify, count=1)  # due later counts: enqueued, not started
    await skiplock_kit.assert_enqueued(resize, queue="kit_media")
    await skiplock_kit.assert_not_enqueued(resize, {"width": 320})
    await skiplock_kit.assert_not_enqueued(flaky)

    listed = r"of 'kit_resize' with args \{'width': 320\}.*found 0.*kit_notify"
    with pytest.raises(AssertionError, match=listed):
        await skiplock_kit.assert_enqueued(resize, {"width": 320})
    with pytest.raises(AssertionError, match=r"expected 2 job\(s\) of 'kit_resize'.*found 1"):
        await skiplock_kit.assert_enqueued(resize, count=2)
    with pytest.raises(AssertionError, match=r"expected no job of 'kit_resize'"):
        await skiplock_kit.assert_not_enqueued(resize)
    with pytest.raises(AssertionError, match="in queue 'default'"):
        await skiplock_kit.assert_enqueued(resize, queue="default")


async def test_drain_runs_everything_due_children_included_and_returns_outcomes(skiplock_kit: Kit) -> None:
    await resize.enqueue({"url": "https://example.com/a.png", "width": 64})
    await flaky.enqueue(Flaky(fail_times=0))

    drained = await skiplock_kit.drain()

    assert [(j.task, j.state, j.result) for j in drained] == [
        ("kit_resize", JobState.SUCCEEDED, {"width": 64}),
        ("kit_flaky", JobState.SUCCEEDED, 1),
        ("kit_notify", JobState.SUCCEEDED, "notified https://example.com/a.png"),  # the child it made
    ]
    assert drained.of(notify)[0].parent_id == drained.of(resize)[0].id
    assert len(drained.succeeded) == 3
    assert not drained.failed
    await skiplock_kit.assert_not_enqueued(resize)  # ran: no longer enqueued
    await resize.enqueue({"url": "again"})  # after a drain, task.enqueue still has the kit's client
    assert [j.task for j in await skiplock_kit.drain()] == ["kit_resize", "kit_notify"]
    assert not (await skiplock_kit.drain()).jobs  # nothing left


async def test_drain_runs_a_workflow_to_its_end(skiplock_kit: Kit) -> None:
    flow = chain(Step("first", "kit_notify", {"url": "1"}), Step("second", "kit_notify", {"url": "2"}))
    assert isinstance(flow, Workflow)
    info = await skiplock_kit.client.start(flow)
    await skiplock_kit.assert_enqueued(notify, {"url": "2"})  # the waiting step counts as enqueued

    drained = await skiplock_kit.drain()

    assert [(j.step, j.state) for j in drained] == [("first", "succeeded"), ("second", "succeeded")]
    [workflow] = drained.workflows
    assert (workflow.id, workflow.state, workflow.succeeded) == (info.id, "succeeded", 2)


async def test_until_makes_delayed_jobs_and_retries_due_and_leaves_later_ones(skiplock_kit: Kit) -> None:
    await notify.enqueue({"url": "in an hour"}, delay_s=3600)
    await notify.enqueue({"url": "tomorrow"}, delay_s=86_400)
    await flaky.enqueue(Flaky(fail_times=1))  # fails once, retried 600 s later

    first = await skiplock_kit.drain()
    [attempt] = first.of(flaky)
    assert (attempt.state, attempt.attempts, attempt.errors[0].message) == ("queued", 1, "attempt 1 fails")
    assert not first.of(notify)  # not due: drain() alone never moves time

    later = await skiplock_kit.drain(until=timedelta(hours=1, minutes=1))
    assert [(j.state, j.result) for j in later.of(notify)] == [("succeeded", "notified in an hour")]
    assert [(j.state, j.attempts, j.result) for j in later.of(flaky)] == [("succeeded", 2, 2)]
    [left] = await skiplock_kit.assert_enqueued(notify, {"url": "tomorrow"})
    assert left.state == JobState.QUEUED


@pytest.mark.parametrize("skiplock_registry", [TaskRegistry(KIT_TASKS)])
async def test_until_fires_every_schedule_tick_up_to_it(skiplock_kit: Kit) -> None:
    began = datetime.now(UTC)
    first = await skiplock_kit.drain()  # declared at the drain's start; first tick ahead
    ended = datetime.now(UTC)
    # Nothing ran, but an hour's own tick if one began during that drain (the clock is real).
    assert all(j.task == hourly.name for j in first.jobs)
    assert all(j.scheduled_for is not None and began <= j.scheduled_for <= ended for j in first.jobs)
    assert len(first.jobs) <= 1
    drained = await skiplock_kit.drain(until=timedelta(hours=3))
    ticks = drained.of(hourly)
    # Each hour within the three (a fourth if an hour began between the two drains), one job each.
    assert len(ticks) + len(first.jobs) in (3, 4)
    assert all(j.state == "succeeded" for j in ticks)
    times = [j.scheduled_for for j in ticks if j.scheduled_for is not None]
    assert len(times) == len(ticks)
    assert all((t.minute, t.second) == (0, 0) for t in times)
    assert times == [times[0] + timedelta(hours=n) for n in range(len(times))]  # each once, in order
    assert not (await skiplock_kit.drain(until=timedelta(hours=3))).jobs  # those ticks are done


@pytest.mark.parametrize("skiplock_registry", [TaskRegistry([notify, suite_tasks.wait])])
async def test_drain_leaves_paused_queues_and_unknown_tasks_and_times_out_naming_what_is_left(
    skiplock_kit: Kit,
) -> None:
    client = skiplock_kit.client
    await client.enqueue("kit_notify", {"url": "paused"}, queue="held")
    await client.set_paused("held", True)
    await client.pool.execute(  # a job of a task this registry does not have (another service's)
        "INSERT INTO jobs (queue, task, args) VALUES ('default', 'elsewhere', '{}')"
    )
    assert not (await skiplock_kit.drain()).jobs  # neither is waited for
    await skiplock_kit.assert_enqueued(notify, {"url": "paused"}, queue="held")

    await client.enqueue("wait", {"seconds": 1.5})
    with pytest.raises(TimeoutError, match=r"jobs still to run after 0.3 s: \{'wait': \{'running': "):
        await skiplock_kit.drain(timeout_s=0.3)
    await client.set_paused("held", False)
    drained = await skiplock_kit.drain()
    assert [(j.task, j.queue, j.state) for j in drained.of(notify)] == [("kit_notify", "held", "succeeded")]
