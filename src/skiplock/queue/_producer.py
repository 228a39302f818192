"""The claim loop: claims batches sized to free capacity, runs each job as a task it owns.

Wakes on a queue's notification, on freed capacity while a queue still has work, and on a
jittered poll (the truth: notifications are only hints). Stopping stops claiming, lets running
jobs finish within the grace period, then hands the rest back to their queues.
"""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from skiplock.db.pool import DB_UNAVAILABLE, AnyConnection, close_quietly, connect
from skiplock.errors import DatabaseError
from skiplock.queue._executor import Executor
from skiplock.queue._running import RunningJobs, StopReason
from skiplock.queue._statements import JOBS
from skiplock.queue.models import ClaimedJob
from skiplock.service import StopSignal

log = structlog.get_logger("skiplock.producer")

#: Connecting (DatabaseError) or claiming failed: back off and try again.
_CLAIM_FAILED: tuple[type[Exception], ...] = (*DB_UNAVAILABLE, DatabaseError)


class Producer:
    name = "producer"

    def __init__(
        self,
        dsn: str,
        *,
        owner: str,
        queues: dict[str, int],
        concurrency: int,
        lease_s: float,
        poll_interval_s: float,
        shutdown_grace_s: float,
        executor: Executor,
        running: RunningJobs,
    ) -> None:
        self.dsn = dsn
        self.owner = owner
        self.queue_limits = queues
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self.shutdown_grace_s = shutdown_grace_s
        self.executor = executor
        self.running = running
        #: Only jobs of these tasks are claimed; others wait for a process that knows them.
        self.tasks = sorted(task.name for task in executor.registry)
        self._woken: set[str] = set()
        self._hungry: set[str] = set()
        self._wakeup = asyncio.Event()
        self._stop = StopSignal()

    def wake(self, queue: str) -> None:
        """A hint that ``queue`` has due jobs (called from the listener callback)."""
        if queue in self.queue_limits:
            self._woken.add(queue)
            self._wakeup.set()

    def wake_all(self) -> None:
        self._woken.update(self.queue_limits)
        self._wakeup.set()

    async def run(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as jobs:
            ready.set()
            self.wake_all()
            backoff = 0.05
            while not self._stop.is_set:
                try:
                    # A connection of its own: its session setting must not reach the pool.
                    conn = await connect(self.dsn)
                    try:
                        await conn.execute(JOBS.session_async_commit)
                        while not self._stop.is_set:
                            await self._wait_for_work()
                            if not self._stop.is_set:
                                await self._claim_round(conn, jobs)
                                backoff = 0.05
                    finally:
                        await close_quietly(conn)
                except _CLAIM_FAILED as exc:
                    log.warning("claim_failed", error=str(exc), retry_in_s=backoff)
                    self.wake_all()
                    if await self._stop.sleep(backoff):
                        break
                    backoff = min(backoff * 2, 5.0)
            await self._drain()

    async def _wait_for_work(self) -> None:
        if not self._woken:
            timeout = self.poll_interval_s * (1 + 0.1 * random.random())
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)
            except TimeoutError:
                self.wake_all()
        self._wakeup.clear()
        # Let completions of the same moment free their slots, so one claim takes them all.
        await asyncio.sleep(0)

    async def _claim_round(self, conn: AnyConnection, jobs: asyncio.TaskGroup) -> None:
        queues, self._woken = self._woken, set()
        for queue in queues:
            free = min(
                self.concurrency - len(self.running),
                self.queue_limits[queue] - self.running.count(queue),
            )
            if free <= 0:
                self._hungry.add(queue)
                continue
            records = await conn.fetch(
                JOBS.job_claim_many, queue, free, self.owner, self.lease_s, None, self.tasks
            )
            if len(records) == free:
                self._hungry.add(queue)
            else:
                self._hungry.discard(queue)
            for record in records:
                self._start(jobs, ClaimedJob.from_record(record))

    def _start(self, jobs: asyncio.TaskGroup, job: ClaimedJob) -> None:
        running = self.running.add(job)
        if running is None:
            log.error("job_claimed_twice", job_id=job.id, attempt=job.attempt)
            return
        running.task = jobs.create_task(self.executor.run(running), name=f"skiplock:job:{job.id}")
        running.task.add_done_callback(self._job_done)

    def _job_done(self, _task: asyncio.Task[None]) -> None:
        if self._hungry:
            self._woken.update(self._hungry)
            self._wakeup.set()

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_grace_s
        if len(self.running):
            log.info("waiting_for_running_jobs", count=len(self.running), grace_s=self.shutdown_grace_s)
        while len(self.running) and time.monotonic() < deadline:
            self.running.freed.clear()
            try:
                await asyncio.wait_for(self.running.freed.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        for running in self.running:
            self.running.stop(running.job.id, StopReason.SHUTDOWN)

    async def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()
