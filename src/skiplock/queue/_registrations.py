"""Tells the cluster which tasks this worker process can run (for rolling deploys).

Each worker process writes one ``task_registrations`` row per task at start and pushes its expiry
forward on a beat; at stop it removes them. A queued job whose task has no live row waits for a
process that knows the task (the claim only takes registered tasks), and ``GET /queues``,
``/metrics`` and the dashboard count such jobs. The rows only inform: no claim depends on them, so
a registration that lapses during an outage costs a wrong count for a while, never a job.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from skiplock.queue._statements import QUEUES
from skiplock.service import Recovery, StopSignal, str_of

log = structlog.get_logger("skiplock.registrations")


class TaskRegistrar:
    """Keeps this process's tasks registered while it runs: every ``interval_s``, for ``ttl_s``."""

    name = "registrar"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        owner: str,
        tasks: list[str],
        interval_s: float = 10.0,
        ttl_s: float = 60.0,
    ) -> None:
        self.pool = pool
        self.owner = owner
        self.tasks = sorted(tasks)
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self._stop = StopSignal()

    async def run(self, ready: asyncio.Event) -> None:
        recovery = Recovery(self.name, self._stop)
        while not self._stop.is_set:
            try:
                await self.register()
            except Exception as exc:  # the loop must outlive anything; Recovery logs and counts it
                ready.set()  # never hold the start back: the claim does not depend on this
                if await recovery.failed(exc):
                    break
                continue
            recovery.succeeded()
            ready.set()
            if await self._stop.sleep(self.interval_s):
                break
        await self._unregister()

    async def register(self) -> None:
        """Write (or refresh) this process's rows now."""
        await self.pool.execute(QUEUES.task_register, self.tasks, self.owner, self.ttl_s)

    async def _unregister(self) -> None:
        try:
            await self.pool.execute(QUEUES.task_unregister, self.owner, timeout=5)
        except Exception as exc:  # best effort: the rows lapse on their own within ttl_s
            log.warning("task_unregister_failed", error=str_of(exc))

    async def stop(self) -> None:
        self._stop.set()
