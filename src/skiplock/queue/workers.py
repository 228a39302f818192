"""The fleet as rows (migration 0021): every process's registration, and operators' requests to one.

Each process keeps its own row alive (see _presence.py); this module reads the rows and writes
requests to them: quiet (claim nothing more, let running jobs finish), resume, stop (shut down
gracefully) and a new concurrency. A request is a column of the worker's row and a
``worker:<id>`` notification: the process applies it within a second, or at its next beat if the
notification was lost. A worker that stopped or missed three heartbeats is offline; a request to
it is refused (:class:`WorkerOffline`).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

import asyncpg
from pydantic import BaseModel, Field

from skiplock.errors import ConflictError, WorkerNotFound, WorkerOffline
from skiplock.queue._statements import WORKERS
from skiplock.settings import EVERY_QUEUE

Role = Literal["serve", "worker", "api"]
WorkerState = Literal["online", "quiet", "stopping", "offline"]
#: GET /workers lists at most this many rows (offline ones are pruned after their retention).
MAX_LISTED = 1000


class WorkerInfo(BaseModel):
    """One process boot: who it is, what it serves, its state and the jobs its leases hold."""

    id: str = Field(description="Unique per boot; the lease owner of the jobs it runs.")
    host: str
    pid: int
    version: str
    role: Role = Field(description="serve (HTTP and jobs), worker (jobs only) or api (HTTP only).")
    queues: dict[str, int] = Field(description="Queue → this process's concurrency for it; '*': every queue.")
    concurrency: int = Field(description="Jobs it runs at once (0 for an API-only process).")
    state: WorkerState = Field(
        description="online; quiet (claims nothing, running jobs finish); stopping; offline (it stopped,"
        " or missed three heartbeats)."
    )
    quiet: bool = Field(description="Asked to be quiet (it is, once state says so).")
    stop_requested: bool
    heartbeat_s: float = Field(description="Seconds between its beats.")
    heartbeat_age_s: float = Field(description="Seconds since its last beat, on the database's clock.")
    started_at: datetime
    last_heartbeat_at: datetime
    stopped_at: datetime | None
    running: list[int] = Field(description="Ids of the running jobs its leases hold.")
    running_count: int

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> WorkerInfo:
        row = dict(record)
        return cls.model_validate({**row, "running_count": len(row["running"])})


class WorkerCounts(BaseModel):
    """What /metrics shows of the fleet."""

    live: dict[tuple[str, str], int] = Field(description="(role, state) → live workers.")
    held_by_offline: int = Field(description="Running jobs whose leases offline workers hold.")


class Workers:
    """Read the fleet and send requests to its workers (the API's way in)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._served: tuple[float, dict[str, int]] | None = None  # (monotonic time, read)
        self._counts: tuple[float, WorkerCounts] | None = None

    async def all(self) -> list[WorkerInfo]:
        """Every registered process, newest boot first (offline ones until they are pruned)."""
        rows = await self.pool.fetch(WORKERS.worker_list, None, MAX_LISTED)
        return [WorkerInfo.from_record(r) for r in rows]

    async def get(self, worker_id: str) -> WorkerInfo:
        row = await self.pool.fetchrow(WORKERS.worker_list, worker_id, 1)
        if row is None:
            raise WorkerNotFound(f"no worker {worker_id!r}", worker_id=worker_id)
        return WorkerInfo.from_record(row)

    async def quiet(self, worker_id: str) -> WorkerInfo:
        """It claims nothing more; its running jobs finish."""
        return await self._request(worker_id, quiet=True, jobs=True)

    async def resume(self, worker_id: str) -> WorkerInfo:
        """It claims again."""
        return await self._request(worker_id, quiet=False, jobs=True)

    async def stop(self, worker_id: str) -> WorkerInfo:
        """It shuts down as on SIGTERM: claiming stops, running jobs get the grace period."""
        return await self._request(worker_id, stop=True)

    async def set_concurrency(self, worker_id: str, concurrency: int) -> WorkerInfo:
        """It runs up to ``concurrency`` jobs at once from now on (running ones over it finish)."""
        return await self._request(worker_id, concurrency=concurrency, jobs=True)

    async def _request(
        self,
        worker_id: str,
        *,
        quiet: bool | None = None,
        stop: bool = False,
        concurrency: int | None = None,
        jobs: bool = False,
    ) -> WorkerInfo:
        worker = await self.get(worker_id)
        if jobs and worker.role == "api":
            raise ConflictError("an API-only process runs no jobs", worker_id=worker_id)
        status = await self.pool.execute(WORKERS.worker_request, worker_id, quiet, stop, concurrency)
        if status.split()[-1] == "0":
            raise WorkerOffline(worker_id=worker_id)
        return await self.get(worker_id)

    async def served_queues(self, max_age_s: float = 0) -> dict[str, int]:
        """Queue → how many live workers claim from it; ``'*'``: those that serve every queue.
        ``max_age_s`` > 0 may answer from a read at most that old."""
        now = time.monotonic()
        if self._served is not None and now - self._served[0] <= max_age_s:
            return self._served[1]
        served = {r["name"]: r["workers"] for r in await self.pool.fetch(WORKERS.worker_served_queues)}
        self._served = (now, served)
        return served

    async def counts(self, max_age_s: float = 0) -> WorkerCounts:
        """Live workers by role and state, and the jobs offline ones hold (a read at most
        ``max_age_s`` old: the count of held jobs reads every running job)."""
        now = time.monotonic()
        if self._counts is not None and now - self._counts[0] <= max_age_s:
            return self._counts[1]
        row = await self.pool.fetchrow(WORKERS.worker_counts)
        assert row is not None  # one row, always
        live = {_role_state(key): n for key, n in row["live"].items()}
        counts = WorkerCounts(live=live, held_by_offline=row["held_offline"])
        self._counts = (now, counts)
        return counts


def _role_state(key: str) -> tuple[str, str]:
    role, _, state = key.partition(":")
    return role, state


def served_by(queue: str, served: dict[str, int]) -> int:
    """How many live workers claim from ``queue``, given :meth:`Workers.served_queues`."""
    return served.get(queue, 0) + (served.get(EVERY_QUEUE, 0) if queue != EVERY_QUEUE else 0)
