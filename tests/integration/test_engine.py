"""The engine in this process on a real database: run, retry, timeout, unique, priority, delay, pause."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from skiplock.errors import InvalidArgumentsError, InvalidStateError, JobNotFound, UnknownTaskError
from skiplock.queue import Engine, JobState
from skiplock.queue._completer import Completer
from skiplock.queue._event_writer import EventWriter
from skiplock.queue._producer import Producer
from tests.conftest import make_settings
from tests.support.waiting import wait_until


async def finished(engine: Engine, job_id: int, timeout: float = 10.0) -> JobState:
    async def state() -> JobState | None:
        job = await engine.client.get(job_id)
        return job.state if job.state in {"succeeded", "failed", "cancelled"} else None

    result: JobState = await wait_until(state, timeout)
    return result


async def poll_round_ended(engine: Engine, timeout: float = 5.0) -> None:
    """Return once the producer's poll has fired and a claim round that began after it has ended:
    whatever was due by then and claimable would have been claimed."""
    assert engine.supervisor is not None
    (producer,) = (s for s in engine.supervisor.services if isinstance(s, Producer))
    producer.polled.clear()
    await asyncio.wait_for(producer.polled.wait(), timeout)
    # The poll fires between rounds, so any round that ends from here on began after it.
    producer.round_done.clear()
    await asyncio.wait_for(producer.round_done.wait(), timeout)


async def test_enqueued_job_runs_and_succeeds_with_its_result(engine: Engine) -> None:
    job = await engine.client.enqueue("sleep", {"seconds": 0.05, "steps": 2})
    assert job.state == "queued"
    assert await finished(engine, job.id) == "succeeded"
    done = await engine.client.get(job.id)
    assert done.result == {"slept": 0.05}
    assert done.attempts == 1
    assert done.progress is not None
    assert done.progress["fraction"] == 1.0
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.started_at >= done.created_at


async def test_failing_job_retries_with_backoff_then_fails_keeping_every_error(
    engine: Engine,
) -> None:
    job = await engine.client.enqueue("always_fails", {}, max_attempts=3)
    assert await finished(engine, job.id) == "failed"
    done = await engine.client.get(job.id)
    assert done.attempts == 3
    assert [e.attempt for e in done.errors] == [1, 2, 3]
    assert [e.message for e in done.errors] == [f"boom on attempt {n}" for n in (1, 2, 3)]
    assert all(e.type == "RuntimeError" and e.traceback for e in done.errors)
    # backoff base 0.05 s without jitter: 0.05 s then 0.1 s between attempts, at least
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(done.errors, done.errors[1:], strict=False)]
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1


async def test_job_that_fails_once_succeeds_on_its_second_attempt(engine: Engine) -> None:
    job = await engine.client.enqueue("fails_once", {})
    assert await finished(engine, job.id) == "succeeded"
    done = await engine.client.get(job.id)
    assert done.attempts == 2
    assert len(done.errors) == 1
    assert done.result == {"attempt": 2}


async def test_permanent_error_fails_at_once_without_retry(engine: Engine) -> None:
    job = await engine.client.enqueue("fails_permanently", {}, max_attempts=5)
    assert await finished(engine, job.id) == "failed"
    done = await engine.client.get(job.id)
    assert done.attempts == 1
    assert done.errors[0].type == "PermanentJobError"


@pytest.mark.parametrize(("retryable", "attempts"), [(False, 1), (True, 3)])
async def test_a_tasks_own_error_is_retried_as_its_retryable_says(
    engine: Engine, retryable: bool, attempts: int
) -> None:
    job = await engine.client.enqueue("fails_by_domain_error", {"retryable": retryable}, max_attempts=3)
    assert await finished(engine, job.id) == "failed"
    done = await engine.client.get(job.id)
    assert done.attempts == attempts
    assert [e.type for e in done.errors] == ["DomainFailure"] * attempts


async def test_job_exceeding_its_timeout_fails_with_a_timeout_error(engine: Engine) -> None:
    job = await engine.client.enqueue("wait", {"seconds": 30}, timeout_s=0.2, max_attempts=1)
    assert await finished(engine, job.id) == "failed"
    done = await engine.client.get(job.id)
    assert done.errors[0].type == "TimeoutError"
    assert done.errors[0].message == "timed out after 0.2s"


async def test_plain_def_task_runs_in_a_thread_without_blocking_the_loop(engine: Engine) -> None:
    job = await engine.client.enqueue("blocking", {"seconds": 0.5})
    ticks = 0
    while (await engine.client.get(job.id)).state != "succeeded":
        ticks += 1
        await asyncio.sleep(0.02)
        assert ticks < 500
    assert ticks >= 5  # the loop kept turning while the thread slept
    progress = (await engine.client.get(job.id)).progress
    assert progress is not None
    assert progress["message"] == "halfway"


async def test_unique_key_returns_the_live_job_then_allows_a_new_one(engine: Engine) -> None:
    first = await engine.client.enqueue("wait", {"seconds": 0.3}, unique_key="report-42")
    again = await engine.client.enqueue("wait", {"seconds": 0.3}, unique_key="report-42")
    assert first.created
    assert not again.created
    assert again.id == first.id
    assert await finished(engine, first.id) == "succeeded"
    later = await engine.client.enqueue("wait", {"seconds": 0}, unique_key="report-42")
    assert later.created
    assert later.id != first.id


async def test_jobs_run_in_priority_order(settings, registry, db: asyncpg.Connection) -> None:  # type: ignore[no-untyped-def]
    one_at_a_time = make_settings(settings.database_url, concurrency=1)
    async with Engine(one_at_a_time, registry, settings.database_url) as engine:
        ids = {}
        async with engine.client.pool.acquire() as conn, conn.transaction():  # all visible at once
            for priority in (0, 5, -3, 10, 5):
                job = await engine.client.enqueue(
                    "record_run", {"marker": str(priority)}, priority=priority, conn=conn
                )
                ids[job.id] = priority
        await wait_until(lambda: db.fetchval("SELECT count(*) = 5 FROM test_runs"))
    order = await db.fetch("SELECT job_id FROM test_runs ORDER BY id")
    ran = [ids[r["job_id"]] for r in order]
    assert ran == [10, 5, 5, 0, -3]
    fives = [r["job_id"] for r in order if ids[r["job_id"]] == 5]
    assert fives == sorted(fives)  # same priority: first in, first out


async def test_delayed_job_does_not_start_before_run_at(engine: Engine) -> None:
    job = await engine.client.enqueue("noop", {}, delay_s=1.2)
    assert job.run_at > job.created_at + timedelta(seconds=1.1)
    await poll_round_ended(engine)
    assert (await engine.client.get(job.id)).state == "queued"
    assert await finished(engine, job.id) == "succeeded"
    done = await engine.client.get(job.id)
    assert done.started_at is not None
    assert done.started_at >= done.run_at


async def test_paused_queue_is_not_claimed_until_resumed(engine: Engine) -> None:
    await engine.client.set_paused("default", True)
    job = await engine.client.enqueue("noop", {})
    await poll_round_ended(engine)  # the poll, not only NOTIFY, must obey the pause
    assert (await engine.client.get(job.id)).state == "queued"
    overview = {q.name: q for q in await engine.client.queues()}
    assert overview["default"].paused
    assert overview["default"].counts == {"queued": 1}
    await engine.client.set_paused("default", False)
    assert await finished(engine, job.id, timeout=3) == "succeeded"


async def test_cancelled_queued_job_never_starts(engine: Engine) -> None:
    job = await engine.client.enqueue("record_run", {}, delay_s=0.5)
    cancelled = await engine.client.cancel(job.id)
    assert cancelled.state == "cancelled"
    assert cancelled.finished_at is not None
    await wait_until(lambda: engine.client.pool.fetchval("SELECT now() >= $1", job.run_at))
    await poll_round_ended(engine)  # claimed now, were it not cancelled
    assert (await engine.client.get(job.id)).state == "cancelled"
    assert await engine.client.pool.fetchval("SELECT count(*) FROM test_runs") == 0


async def test_running_job_cancelled_in_process_ends_cancelled(engine: Engine) -> None:
    job = await engine.client.enqueue("wait", {"seconds": 30})
    await wait_until(lambda: engine.running.count() == 1)
    await engine.client.cancel(job.id)
    assert await finished(engine, job.id, timeout=2) == "cancelled"


async def test_cancel_of_finished_job_is_refused_and_retry_requeues_it(engine: Engine) -> None:
    job = await engine.client.enqueue("fails_permanently", {})
    assert await finished(engine, job.id) == "failed"
    with pytest.raises(InvalidStateError):
        await engine.client.cancel(job.id)
    retried = await engine.client.retry(job.id)
    assert retried.state == "queued"
    assert retried.max_attempts >= 2
    assert await finished(engine, job.id) == "failed"
    assert (await engine.client.get(job.id)).attempts == 2
    with pytest.raises(JobNotFound):
        await engine.client.retry(10**9)


async def test_task_enqueues_a_follow_up_job(engine: Engine) -> None:
    parent = await engine.client.enqueue("enqueue_child", {"marker": "child"})
    assert await finished(engine, parent.id) == "succeeded"
    child_id = (await engine.client.get(parent.id)).result["child"]
    assert await finished(engine, child_id) == "succeeded"


async def test_enqueue_on_callers_transaction_exists_only_if_it_commits(engine: Engine) -> None:
    async with engine.client.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                rolled_back = await engine.client.enqueue("noop", {}, conn=conn)
                raise RuntimeError("the caller's work failed")
        async with conn.transaction():
            committed = await engine.client.enqueue("noop", {}, conn=conn)
    with pytest.raises(JobNotFound):
        await engine.client.get(rolled_back.id)
    assert await finished(engine, committed.id) == "succeeded"


async def test_bad_enqueue_writes_nothing(engine: Engine) -> None:
    with pytest.raises(UnknownTaskError) as unknown:
        await engine.client.enqueue("nope", {})
    assert "sleep" in unknown.value.message
    with pytest.raises(InvalidArgumentsError) as invalid:
        await engine.client.enqueue("sleep", {"seconds": "soon"})
    assert invalid.value.extra["errors"][0]["field"] == "seconds"
    with pytest.raises(InvalidArgumentsError):
        await engine.client.enqueue("noop", {}, priority=1000)
    assert await engine.client.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_listener_comes_back_after_its_connection_is_killed(
    engine: Engine, db: asyncpg.Connection
) -> None:
    pid = engine.listener.connection_pid
    assert pid is not None
    assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
    job = await engine.client.enqueue("noop", {})
    assert await finished(engine, job.id) == "succeeded"  # by poll or after the reconnect
    await wait_until(lambda: engine.listener.signals.reconnects >= 1)
    assert engine.listener.connection_pid != pid
    # and NOTIFY works again: with a long poll only a notification can start the next job fast
    second = await engine.client.enqueue("noop", {})
    assert await finished(engine, second.id) == "succeeded"


async def test_bulk_enqueue_copies_every_job_and_they_run(engine: Engine) -> None:
    from skiplock.queue import EnqueueRequest

    requests = [EnqueueRequest("record_run", {"marker": str(n)}) for n in range(200)]
    requests.append(EnqueueRequest("noop", {}, delay_s=60, priority=5, queue="later"))
    ids = await engine.client.enqueue_many(requests)
    assert len(ids) == 201
    assert ids == sorted(ids)
    delayed = await engine.client.get(ids[-1])
    assert (delayed.queue, delayed.priority, delayed.state) == ("later", 5, "queued")
    assert delayed.run_at > delayed.created_at
    await wait_until(lambda: engine.client.pool.fetchval("SELECT count(*) = 200 FROM test_runs"))
    markers = await engine.client.pool.fetch("SELECT job_id, marker FROM test_runs")
    assert {r["job_id"]: r["marker"] for r in markers} == {ids[n]: str(n) for n in range(200)}


async def test_bulk_enqueue_with_one_bad_job_names_it_and_writes_nothing(engine: Engine) -> None:
    from skiplock.queue import EnqueueRequest

    requests = [EnqueueRequest("noop", {}), EnqueueRequest("sleep", {"seconds": "x"}), EnqueueRequest("noop")]
    with pytest.raises(InvalidArgumentsError) as error:
        await engine.client.enqueue_many(requests)
    assert error.value.extra["index"] == 1
    assert error.value.message.startswith("job 1: ")
    assert await engine.client.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_a_bulk_enqueue_refuses_a_unique_key_and_writes_nothing(engine: Engine) -> None:
    from skiplock.queue import EnqueueRequest

    requests = [EnqueueRequest("noop", {}), EnqueueRequest("noop", {}, unique_key="one")]
    with pytest.raises(InvalidArgumentsError) as error:
        await engine.client.enqueue_many(requests)
    assert error.value.extra["index"] == 1
    assert error.value.extra["errors"][0]["field"] == "unique_key"
    assert await engine.client.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_one_request_enqueued_as_a_request_or_as_arguments_is_the_same_job(engine: Engine) -> None:
    from skiplock.queue import EnqueueRequest

    request = EnqueueRequest("noop", {}, "media", 7, None, 30.0, 4, 9.0, "same")
    first = await engine.client.enqueue_request(request)
    again = await engine.client.enqueue("noop", {}, queue="media", delay_s=30.0, unique_key="same")
    assert (first.created, again.created, again.id) == (True, False, first.id)
    assert (first.queue, first.priority, first.max_attempts, first.timeout_s) == ("media", 7, 4, 9.0)
    assert first.unique_key == "same"
    assert first.run_at > first.created_at


async def test_args_given_as_a_model_are_stored_and_another_model_is_validated(engine: Engine) -> None:
    from pydantic import BaseModel

    from skiplock.tasks import SleepArgs

    job = await engine.client.enqueue("sleep", SleepArgs(seconds=0, steps=2), delay_s=60)
    assert job.args == {"seconds": 0.0, "steps": 2, "fail": False}

    class Other(BaseModel):
        seconds: float

    with pytest.raises(InvalidArgumentsError):
        await engine.client.enqueue("sleep", Other(seconds=-5))


@pytest.mark.parametrize(
    ("kind", "stored"),
    [("list", [1, [2, 3], {"a": 4}]), ("dict", {"a": [1, 2]}), ("none", None), ("huge", 2**70)],
)
async def test_any_json_result_is_stored_as_returned(engine: Engine, kind: str, stored: object) -> None:
    jobs = [await engine.client.enqueue("returns", {"kind": k}) for k in ("list", "dict", "none", "huge")]
    for job in jobs:  # all four in flight together: they share completion batches
        assert await finished(engine, job.id) == "succeeded"
    mine = next(j for j, k in zip(jobs, ("list", "dict", "none", "huge"), strict=True) if k == kind)
    assert (await engine.client.get(mine.id)).result == stored


async def test_plain_def_task_past_its_timeout_never_runs_twice_at_once(engine: Engine) -> None:
    from tests.support.tasks import THREADS

    THREADS["peak"] = 0
    job = await engine.client.enqueue("slow_thread", {"seconds": 0.6}, timeout_s=0.2, max_attempts=2)
    assert await finished(engine, job.id) == "failed"
    done = await engine.client.get(job.id)
    assert [e.type for e in done.errors] == ["TimeoutError", "TimeoutError"]
    assert THREADS["peak"] == 1


async def test_progress_reported_in_a_tight_loop_is_throttled_but_the_last_value_is_kept(
    engine: Engine,
) -> None:
    job = await engine.client.enqueue("busy_progress", {"count": 1000, "seconds": 1.0})
    assert await finished(engine, job.id) == "succeeded"
    rows = await engine.client.pool.fetch(
        "SELECT data FROM job_events WHERE job_id = $1 AND kind = 'progress' ORDER BY seq", job.id
    )
    fractions = [r["data"]["fraction"] for r in rows]
    done = await engine.client.get(job.id)
    assert done.started_at is not None
    assert done.finished_at is not None
    ran_s = (done.finished_at - done.started_at).total_seconds()  # ~1 s, longer on a busy machine
    assert 3 <= len(fractions) <= ran_s * 10 + 2  # at most 10 writes a second (+ the final one)
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    progress = (await engine.client.get(job.id)).progress
    assert progress is not None
    assert progress["current"] == 1000


async def test_every_log_line_is_kept_in_order_before_the_final_state(engine: Engine) -> None:
    # Many jobs finishing while their earlier lines are being written: none may be lost or reordered.
    jobs = [
        await engine.client.enqueue("chatty", {"lines": 5, "size": 10, "pause_s": 0.02}) for _ in range(20)
    ]
    for job in jobs:
        assert await finished(engine, job.id) == "succeeded"
    for job in jobs:
        rows = await engine.client.pool.fetch(
            "SELECT seq, kind, data FROM job_events WHERE job_id = $1 ORDER BY seq", job.id
        )
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        assert [r["data"]["fields"]["n"] for r in rows if r["kind"] == "log"] == [0, 1, 2, 3, 4]
        assert rows[-1]["kind"] == "state"
        assert rows[-1]["data"]["state"] == "succeeded"


async def test_the_event_writer_and_the_completer_write_only_in_their_shared_turns(engine: Engine) -> None:
    # The turn orders a run's events before its outcome: while it is held, neither writes anything.
    assert engine.supervisor is not None
    (completer,) = (s for s in engine.supervisor.services if isinstance(s, Completer))
    (writer,) = (s for s in engine.supervisor.services if isinstance(s, EventWriter))
    events = "SELECT kind, data->>'state' AS state FROM job_events WHERE job_id = $1 ORDER BY seq"
    async with completer.order.turn:
        job = await engine.client.enqueue("chatty", {"lines": 5, "size": 10, "pause_s": 0.05})
        await wait_until(lambda: completer.pending == 1, 10)  # it ran to its end
        await asyncio.sleep(0.3)  # three of the event writer's intervals: it would have written
        assert [tuple(r) for r in await engine.client.pool.fetch(events, job.id)] == [("state", "running")]
    assert writer.order is completer.order
    assert await finished(engine, job.id) == "succeeded"
