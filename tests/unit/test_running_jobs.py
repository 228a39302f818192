"""The in-memory set of running jobs: what reaches which attempt."""

from __future__ import annotations

from skiplock.queue._running import RunningJobs
from skiplock.queue.models import ClaimedJob


def _attempt(n: int) -> ClaimedJob:
    return ClaimedJob(
        id=7, queue="q", task="t", args={}, attempt=n, max_attempts=5, timeout_s=None, priority=0
    )


async def test_a_late_event_of_an_earlier_attempt_never_lands_in_a_newer_one() -> None:
    jobs = RunningJobs(owner="me")
    first = jobs.add(_attempt(1))
    assert first is not None
    late = jobs.event_sink(first)  # what attempt 1's context sends to (a thread may call it late)
    late(7, "log", {"message": "attempt 1 at work"})
    jobs.remove(7)
    second = jobs.add(_attempt(2))
    assert second is not None
    late(7, "log", {"message": "attempt 1, late"})
    jobs.event_sink(second)(7, "log", {"message": "attempt 2"})
    assert [data["message"] for _, data in second.pending] == ["attempt 2"]
    assert [data["message"] for _, data in first.pending] == ["attempt 1 at work"]
