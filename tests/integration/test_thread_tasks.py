"""Plain ``def`` tasks: the engine's own threads, and no retry before a stopped thread returns.

A thread cannot be interrupted: a cancelled or timed-out ``def`` job stays ``running`` (its lease
renewed) until its thread returns, and only then is it reported and possibly run again. Each
execution is recorded (start, end, attempt, thread), so an overlap is measured, not guessed.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from skiplock.queue import Engine
from tests.conftest import make_settings
from tests.support.tasks import EXECUTIONS
from tests.support.waiting import wait_until

FINAL = {"succeeded", "failed", "cancelled"}


def executions(job_id: int) -> list[dict[str, Any]]:
    return sorted((e for e in EXECUTIONS if e["job_id"] == job_id), key=lambda e: e["attempt"])


async def watch_until_final(engine: Engine, job_id: int, timeout: float = 20) -> list[tuple[float, str]]:
    """Every state read (monotonic time, state) until the job is final; a cancelled job is retried
    the moment it reads cancelled, as a user would, so a thread still running would overlap it."""
    seen: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (await engine.client.get(job_id)).state
        seen.append((time.monotonic(), state))
        if state in FINAL:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} not final within {timeout}s: {seen[-1]}")


def while_running(seen: list[tuple[float, str]], run: dict[str, Any]) -> set[str]:
    """The states read while ``run``'s thread ran, from the first read of ``running`` on. A read is
    timed when the test resumes after it, on the engine's own loop: the job's first ``queued``,
    read before its claim, can be timed after the claim and the thread's start ran meanwhile
    (a few ms late, once in two runs on a loaded machine). A job never read ``running`` gives no
    state at all."""
    end = run["end"] if run["end"] is not None else float("inf")
    begun = next((at for at, state in seen if state == "running"), float("inf"))
    return {state for at, state in seen if max(run["start"], begun) <= at < end}


def report(name: str, job_id: int, seen: list[tuple[float, str]]) -> float:
    """Print the execution table and the states read while attempt 1's thread ran; the overlap."""
    runs = executions(job_id)
    first = runs[0]
    origin = first["start"]
    print(f"\n{name}: job {job_id}")
    print("  attempt | thread           | start s | end s")
    for run in runs:
        end = "-" if run["end"] is None else f"{run['end'] - origin:6.2f}"
        print(f"  {run['attempt']:7} | {run['thread']:<16} | {run['start'] - origin:7.2f} | {end}")
    during = sorted(while_running(seen, first))
    final_at, final_state = seen[-1]
    print(f"  states read while attempt 1's thread ran: {during}; {final_state} at {final_at - origin:.2f}s")
    overlap = 0.0
    if len(runs) > 1:
        overlap = max(0.0, (first["end"] or time.monotonic()) - runs[1]["start"])
        print(f"  overlap of attempt 2 with attempt 1: {overlap:.2f}s")
    return overlap


async def test_def_tasks_run_on_their_own_threads_and_dns_lookups_stay_fast(engine: Engine) -> None:
    # More sleeping sync jobs than the loop's default executor has threads (min(32, cpus + 4)).
    count = min(32, (os.cpu_count() or 1) + 4) + 2
    jobs = [await engine.client.enqueue("recorded_thread", {"seconds": 2.5}) for _ in range(count)]
    await wait_until(lambda: sum(1 for j in jobs if executions(j.id)) >= count - 2, 15)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    await asyncio.wait_for(loop.getaddrinfo("localhost", 80), 15)
    lookup_s = time.monotonic() - started
    print(f"\ngetaddrinfo('localhost') with {count} sleeping def jobs: {lookup_s:.3f}s")
    assert lookup_s < 1.0
    await wait_until(lambda: all(executions(j.id) and executions(j.id)[0]["end"] for j in jobs), 20)
    names = {executions(j.id)[0]["thread"].rsplit("_", 1)[0] for j in jobs}
    assert names == {"skiplock-task"}
    for job in jobs:
        assert (await watch_until_final(engine, job.id))[-1][1] == "succeeded"


async def test_cancelled_def_job_stays_running_until_its_thread_returns(engine: Engine) -> None:
    job = await engine.client.enqueue("recorded_thread", {"seconds": 3})
    await wait_until(lambda: executions(job.id), 10)
    await engine.client.cancel(job.id)
    seen = await watch_until_final(engine, job.id)
    assert seen[-1][1] == "cancelled"
    await engine.client.retry(job.id)  # at once, as a user would
    await wait_until(lambda: len(runs := executions(job.id)) == 2 and all(r["end"] for r in runs), 10)
    overlap = report("cancel", job.id, seen)
    first = executions(job.id)[0]
    assert while_running(seen, first) == {"running"}
    assert overlap == 0.0


async def test_timed_out_def_job_is_not_retried_before_its_thread_returns(engine: Engine) -> None:
    job = await engine.client.enqueue("recorded_thread", {"seconds": 2}, timeout_s=0.3, max_attempts=2)
    seen = await watch_until_final(engine, job.id)
    overlap = report("timeout", job.id, seen)
    runs = executions(job.id)
    assert [r["attempt"] for r in runs] == [1, 2]
    assert seen[-1][1] == "succeeded"
    assert while_running(seen, runs[0]) == {"running"}
    assert overlap == 0.0
    errors = (await engine.client.get(job.id)).errors
    assert [e.type for e in errors] == ["TimeoutError"]
    assert "timed out after 0.3s" in errors[0].message


async def test_def_job_cancelled_after_its_timeout_fired_still_waits_for_its_thread(engine: Engine) -> None:
    job = await engine.client.enqueue("recorded_thread", {"seconds": 3}, timeout_s=0.3, max_attempts=2)
    first = (await wait_until(lambda: executions(job.id), 10))[0]
    # Past the timeout: the executor now waits for the thread.
    await wait_until(lambda: time.monotonic() > first["start"] + 0.6, 5)
    await engine.client.cancel(job.id)
    seen = await watch_until_final(engine, job.id)
    assert seen[-1][1] == "cancelled"
    await engine.client.retry(job.id)
    await wait_until(lambda: len(runs := executions(job.id)) == 2 and all(r["end"] for r in runs), 10)
    overlap = report("timeout, then cancel", job.id, seen)
    first = executions(job.id)[0]
    assert while_running(seen, first) == {"running"}
    assert overlap == 0.0


async def test_a_cancelled_def_job_keeps_its_lease_while_its_thread_outlives_it(
    dsn: str, registry: Any, db: Any
) -> None:
    # A 1 s lease and a thread still running 3 s after the cancel: renewed, never rescued.
    settings = make_settings(dsn, lease_s=1.0, rescue_interval_s=0.2)
    async with Engine(settings, registry, dsn) as engine:
        job = await engine.client.enqueue("recorded_thread", {"seconds": 3.5})
        await wait_until(lambda: executions(job.id), 10)
        await engine.client.cancel(job.id)
        seen = await watch_until_final(engine, job.id)
        report("cancel with a 1 s lease", job.id, seen)
        first = executions(job.id)[0]
        assert while_running(seen, first) == {"running"}
        assert seen[-1][1] == "cancelled"
        assert len(executions(job.id)) == 1  # not rescued and run again meanwhile
        row = await db.fetchrow("SELECT attempts, errors FROM jobs WHERE id = $1", job.id)
        assert (row["attempts"], row["errors"]) == (1, [])
