"""Batched completion: outcomes gathered for a moment and written in one statement.

Each write is guarded by state = 'running', the attempt and the lease owner, so an outcome for
a job this process no longer owns changes nothing. Outcomes survive database errors: they
stay queued and are written on the next try. Stopping flushes everything first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from skiplock.db.pool import DB_UNAVAILABLE, AnyConnection, encode_json
from skiplock.queue._statements import EVENTS, JOBS
from skiplock.queue.models import ClaimedJob
from skiplock.service import StopSignal

log = structlog.get_logger("skiplock.completer")

RELEASED = "released"  # not a job state: handed back to the queue at shutdown


@dataclass(slots=True)
class Outcome:
    job: ClaimedJob
    state: str  # succeeded | failed | cancelled | queued (retry) | released
    result: Any = None
    error: dict[str, Any] | None = None
    retry_in_s: float = 0.0
    progress: dict[str, Any] | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (kind, data) not yet written


async def write_events(
    conn: AnyConnection | asyncpg.Pool, events: list[tuple[int, str, dict[str, Any]]]
) -> None:
    """Progress and log events of running jobs, in one statement."""
    job_ids, kinds, data = zip(*events, strict=True)
    await conn.execute(EVENTS.event_write_many, list(job_ids), list(kinds), [encode_json(d) for d in data])


class Completer:
    name = "completer"

    def __init__(
        self, pool: asyncpg.Pool, owner: str, *, max_batch: int = 1000, linger_s: float = 0.002
    ) -> None:
        self.pool = pool
        self.owner = owner
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._pending: list[Outcome] = []
        #: Held around every write; the event writer takes it too, so a job's earlier events
        #: always commit before its outcome (whose state change would make them be refused).
        self.write_lock = asyncio.Lock()
        self._arrived = asyncio.Event()
        self._stop = StopSignal()

    def put(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._arrived.set()

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        backoff = 0.05
        while True:
            if not self._pending:
                if self._stop.is_set:
                    return
                await self._arrived.wait()
            self._arrived.clear()
            if len(self._pending) < self.max_batch and not self._stop.is_set:
                await asyncio.sleep(self.linger_s)  # let a burst of completions share one write
            try:
                await self.flush()
                backoff = 0.05
            except DB_UNAVAILABLE as exc:
                log.warning("completer_flush_failed", error=str(exc), pending=len(self._pending))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def flush(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            await self._write(batch)
            del self._pending[: len(batch)]

    async def _write(self, batch: list[Outcome]) -> None:
        released = [o for o in batch if o.state == RELEASED]
        finished = [o for o in batch if o.state != RELEASED]
        events = [(o.job.id, kind, data) for o in batch for kind, data in o.events]
        async with self.write_lock, self.pool.acquire() as conn, conn.transaction():
            if events:  # the last progress and logs come before the state change
                await write_events(conn, events)
            if finished:
                written = await conn.fetch(
                    JOBS.job_finish_many,
                    [o.job.id for o in finished],
                    [o.job.attempt for o in finished],
                    [o.state for o in finished],
                    [encode_json(o.result) for o in finished],
                    [encode_json(o.error) for o in finished],
                    [o.retry_in_s for o in finished],
                    [encode_json(o.progress) for o in finished],
                    self.owner,
                )
                if len(written) != len(finished):
                    done = {r["id"] for r in written}
                    lost = [o.job.id for o in finished if o.job.id not in done]
                    log.warning("job_outcomes_discarded", job_ids=lost, reason="lease lost")
            if released:
                rows = await conn.fetch(
                JOBS.job_release_many,
                [o.job.id for o in released],
                self.owner,
                [o.job.attempt for o in released],
            )
                requeued = sorted({r["queue"] for r in rows if r["state"] == "queued"})
                if requeued:
                    await conn.execute(JOBS.notify_queued, requeued)
                if rows:
                    log.info("jobs_released", job_ids=[r["id"] for r in rows])

    async def stop(self) -> None:
        self._stop.set()
        self._arrived.set()
