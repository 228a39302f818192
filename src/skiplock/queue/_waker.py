"""Wake-ups for jobs enqueued side by side: one NOTIFY after many inserts, not one in each.

A transaction that sends NOTIFY takes a lock for the whole database from its commit until its WAL
is flushed, so single enqueues that each notify from their own transaction (the insert trigger)
commit one at a time, whatever the number of connections or replicas. While another enqueue of
this process is under way, the client asks the insert not to notify and hands the queue here
instead; this loop sends one NOTIFY for every queue asked for since its last one, on its own
transaction, after those inserts committed. A wake asked for while one is being sent is sent
again afterwards, so no insert is left with only a wake-up that went out before its commit.
Notifications stay hints: if this fails, the workers' poll finds the jobs.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from skiplock.queue._statements import JOBS
from skiplock.service import Recovery, StopSignal

log = structlog.get_logger("skiplock.waker")


class Waker:
    name = "waker"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._queues: set[str] = set()
        self._asked = asyncio.Event()
        self._stop = StopSignal()
        self.running = False  # the client notifies from the insert itself unless this runs

    def wake(self, queue: str) -> None:
        """Wake the workers of ``queue`` soon (the job's insert has committed)."""
        self._queues.add(queue)
        self._asked.set()

    async def run(self, ready: asyncio.Event) -> None:
        recovery = Recovery(self.name, self._stop, max_s=1.0)
        self.running = True
        ready.set()
        try:
            while not self._stop.is_set:
                await self._asked.wait()
                try:
                    await self._send()
                except Exception as exc:  # unavailable, or a bug: the poll covers what is missed
                    if await recovery.failed(exc, queues=sorted(self._queues)):
                        break
                else:
                    recovery.succeeded()
        finally:
            self.running = False
        if self._queues:  # asked for while stopping: one last try, the poll covers a failure
            try:
                await asyncio.wait_for(self._send(), timeout=1.0)
            except Exception as exc:
                log.warning("wake_not_sent", error=type(exc).__name__, queues=sorted(self._queues))

    async def _send(self) -> None:
        self._asked.clear()
        queues, self._queues = self._queues, set()
        if not queues:
            return
        try:
            await self.pool.execute(JOBS.notify_queued, sorted(queues))
        except BaseException:
            self._queues |= queues  # sent again on the next round
            self._asked.set()
            raise

    async def stop(self) -> None:
        self._stop.set()
        self._asked.set()
