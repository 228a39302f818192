"""Fires due schedules. Every process runs one; each tick fires once across all of them.

A due schedule is locked with FOR UPDATE SKIP LOCKED, its jobs are inserted and its next run is
set in the same transaction, so a tick is never fired by two schedulers, and (schedule_id,
scheduled_for) is unique on jobs as a second guard. The loop sleeps until the earliest next run
(capped) and wakes at once when a schedule is created or changed (NOTIFY 'schedules:').
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import asyncpg
import structlog

from skiplock import metrics
from skiplock.db.pool import DB_UNAVAILABLE
from skiplock.queue._statements import SCHEDULES
from skiplock.queue.cron import Cron, CronError, Decision, Misfire, decide
from skiplock.queue.schedules import scheduled_job_row
from skiplock.queue.tasks import TaskRegistry
from skiplock.service import StopSignal

log = structlog.get_logger("skiplock.scheduler")


class Scheduler:
    name = "scheduler"

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: TaskRegistry,
        *,
        batch: int = 100,
        max_sleep_s: float = 30.0,
        grace_s: float = 60.0,
        catch_up_cap: int = 100,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.batch = batch
        self.max_sleep_s = max_sleep_s
        self.grace_s = grace_s
        self.catch_up_cap = catch_up_cap
        self._wake = asyncio.Event()
        self._stop = StopSignal()

    def wake(self, _payload: str = "") -> None:
        """Listener hook for 'schedules:'."""
        self._wake.set()

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        while not self._stop.is_set:
            self._wake.clear()
            try:
                if await self.fire_due() >= self.batch:
                    continue  # more are due
                wait = await self.pool.fetchval(SCHEDULES.schedule_next_due)
            except DB_UNAVAILABLE as exc:
                log.warning("scheduler_failed", error=str(exc))
                wait = 1.0
            # Due but locked by another scheduler: look again shortly, without spinning.
            sleep = self.max_sleep_s if wait is None else min(max(float(wait), 0.01), self.max_sleep_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=sleep)

    async def fire_due(self, now: datetime | None = None) -> int:
        """Fire what is due now (``now`` pins the clock); returns how many schedules were handled.

        One transaction per batch: the due rows stay locked until their jobs exist and their next
        runs are set, with one INSERT for all the batch's jobs and one UPDATE for all its rows.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(SCHEDULES.schedule_claim_due, self.batch, now)
            if not rows:
                return 0
            plans = [(row, self._decide(row)) for row in rows]
            jobs = [
                scheduled_job_row(self.registry, row, tick)
                for row, decision in plans
                for tick in decision.fire
            ]
            created: dict[int, int] = {}
            if jobs:
                columns = [list(column) for column in zip(*jobs, strict=True)]
                inserted = await conn.fetch(SCHEDULES.job_insert_scheduled_many, *columns)
                metrics.schedule_fires.inc(len(inserted))
                for record in inserted:
                    created[record["schedule_id"]] = max(record["id"], created.get(record["schedule_id"], 0))
            await conn.execute(
                SCHEDULES.schedule_advance_many,
                [row["id"] for row, _ in plans],
                [decision.next_run_at for _, decision in plans],
                [decision.fire[-1] if decision.fire else None for _, decision in plans],
                [created.get(row["id"]) for row, _ in plans],
            )
        fired = sum(len(d.fire) for _, d in plans)
        if fired:
            log.info("schedules_fired", schedules=len(rows), jobs=len(created), ticks=fired)
        return len(rows)

    def _decide(self, row: asyncpg.Record) -> Decision:
        try:
            cron = Cron(row["cron"], row["timezone"])
        except CronError as exc:  # cannot come through the API: a hand-edited row; park it
            log.error("schedule_invalid", schedule_id=row["id"], error=str(exc))
            return Decision([], row["db_now"].replace(year=9999))
        return decide(
            cron,
            row["next_run_at"],
            row["db_now"],
            misfire=Misfire(row["misfire"]),
            grace_s=self.grace_s,
            cap=self.catch_up_cap,
        )

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
