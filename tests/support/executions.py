"""One row per execution of a job (start, end, attempt, pid, owner), so overlap is measured.

The ``record_execution`` test task writes its row when it starts and its end when it stops: the
moment its last step of work finished, also when it was cancelled (a stopped execution does no
more work). An execution whose process was killed has no end: ``overlaps`` takes the kill time
the test passes for that pid, or treats it as never ending (so any later execution overlaps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg

EXECUTIONS_TABLE = """
CREATE TABLE IF NOT EXISTS test_executions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint NOT NULL,
    attempt    int    NOT NULL,
    pid        int    NOT NULL,
    owner      text,
    started_at double precision NOT NULL,  -- time.time() of the worker, one machine: one clock
    ended_at   double precision,
    outcome    text   -- finished | stopped | NULL (killed, or the end could not be written)
)
"""


@dataclass(frozen=True, slots=True)
class Execution:
    job_id: int
    attempt: int
    pid: int
    owner: str | None
    started_at: float
    ended_at: float | None
    outcome: str | None


@dataclass(frozen=True, slots=True)
class Overlap:
    job_id: int
    first: Execution
    second: Execution
    seconds: float


async def executions(db: asyncpg.Connection) -> list[Execution]:
    rows = await db.fetch(
        "SELECT job_id, attempt, pid, owner, started_at, ended_at, outcome FROM test_executions"
        " ORDER BY job_id, started_at"
    )
    return [Execution(**dict(r)) for r in rows]


def overlaps(runs: list[Execution], killed_at: dict[int, float] | None = None) -> list[Overlap]:
    """Every pair of executions of the same job that overlap in time, with the overlap in seconds."""
    killed_at = killed_at or {}

    def end(run: Execution) -> float:
        if run.ended_at is not None:
            return run.ended_at
        return killed_at.get(run.pid, math.inf)

    by_job: dict[int, list[Execution]] = {}
    for run in runs:
        by_job.setdefault(run.job_id, []).append(run)
    found = []
    for job_id, job_runs in by_job.items():
        for i, a in enumerate(job_runs):
            for b in job_runs[i + 1 :]:
                seconds = min(end(a), end(b)) - max(a.started_at, b.started_at)
                if seconds > 0:
                    found.append(Overlap(job_id, a, b, seconds))
    return found


def summary(found: list[Overlap]) -> str:
    """What a test prints: the count of overlapping pairs and their total and worst seconds."""
    if not found:
        return "overlapping pairs: 0"
    finite = [o.seconds for o in found if math.isfinite(o.seconds)]
    worst = max(found, key=lambda o: o.seconds)
    return (
        f"overlapping pairs: {len(found)}, jobs: {len({o.job_id for o in found})}, "
        f"total {sum(finite):.2f} s, worst {max(finite, default=math.inf):.2f} s"
        f" ({len(found) - len(finite)} open-ended); worst: job {worst.job_id},"
        f" {_describe(worst.first)} and {_describe(worst.second)}"
    )


def _describe(run: Execution) -> str:
    end = "?" if run.ended_at is None else f"{run.ended_at - run.started_at:+.2f}"
    return (
        f"[pid {run.pid} attempt {run.attempt} owner {run.owner} at {run.started_at:.2f} {end} {run.outcome}]"
    )
