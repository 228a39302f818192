"""Fires due schedules. Every process runs one; each tick fires once across all of them.

A due schedule is locked with FOR UPDATE SKIP LOCKED, its jobs are inserted and its next run is
set in the same transaction, so a tick is never fired by two schedulers, and (schedule_id,
scheduled_for) is unique on jobs as a second guard. The loop sleeps until the earliest next run
(capped) and wakes at once when a schedule is created or changed (NOTIFY 'schedules:').

One bad schedule never stops the others: a row that cannot be decided (a hand-edited cron) is
parked; a batch the database refuses for a value is fired again a schedule at a time, and the
schedule whose job cannot be stored has its due ticks dropped. Each is logged and counted, as are
the ticks the misfire policy skips. The loop survives any error (Recovery: log, count, back off).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import asyncpg
import structlog

from skiplock import metrics
from skiplock.db.pool import AnyConnection, is_unavailable
from skiplock.queue._statements import SCHEDULES
from skiplock.queue.cron import Cron, Decision, Misfire, decide
from skiplock.queue.schedules import scheduled_job_row
from skiplock.queue.tasks import TaskRegistry
from skiplock.service import Recovery, StopSignal, str_of

log = structlog.get_logger("skiplock.scheduler")

#: Where a schedule that cannot be decided waits until someone fixes it (an update recomputes it).
PARKED = datetime(9999, 1, 1, tzinfo=UTC)

#: A due row and what it does now.
Plan = tuple[asyncpg.Record, Decision]


def refused_for_values(exc: BaseException) -> bool:
    """The database (or the driver, encoding an argument) refused a statement for its values:
    retrying the same batch would fail forever, so it is split instead."""
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # the driver's: an argument it cannot encode
        return True
    return isinstance(exc, asyncpg.PostgresError) and not is_unavailable(exc)


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
        recovery = Recovery(self.name, self._stop)
        while not self._stop.is_set:
            self._wake.clear()
            try:
                if await self.fire_due() >= self.batch:
                    recovery.succeeded()
                    continue  # more are due
                wait = await self.pool.fetchval(SCHEDULES.schedule_next_due)
            except Exception as exc:  # the loop must outlive anything; Recovery logs and counts it
                if await recovery.failed(exc):
                    break
                continue
            recovery.succeeded()
            # Due but locked by another scheduler: look again shortly, without spinning.
            sleep = self.max_sleep_s if wait is None else min(max(float(wait), 0.01), self.max_sleep_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=sleep)

    async def fire_due(self, now: datetime | None = None) -> int:
        """Fire what is due now (``now`` pins the clock); returns how many schedules were handled.

        One transaction per batch: the due rows stay locked until their jobs exist and their next
        runs are set, with one INSERT for all the batch's jobs and one UPDATE for all its rows. A
        batch refused for a value (not the database being away) is fired a schedule at a time.
        """
        async with self.pool.acquire() as conn:
            ids: list[int] = []
            try:
                async with conn.transaction():
                    rows = await conn.fetch(SCHEDULES.schedule_claim_due, self.batch, now)
                    ids = [row["id"] for row in rows]
                    plans, created = await self._fire(conn, rows)
            except Exception as exc:
                if not ids or not refused_for_values(exc):
                    raise  # the database is away, or a bug: the loop's Recovery backs off
                log.warning("schedule_batch_refused", error=str_of(exc), schedules=len(ids))
                for schedule_id in ids:
                    await self._fire_alone(conn, schedule_id, now)
                return len(ids)
        self._report(plans, created)
        return len(ids)

    async def _fire(
        self, conn: AnyConnection, rows: list[asyncpg.Record]
    ) -> tuple[list[Plan], dict[int, int]]:
        """Insert the rows' due jobs and advance the rows, in the caller's transaction; returns
        the plans and, per schedule, the newest job created (a tick with its job already: none)."""
        plans = [(row, self._decide(row)) for row in rows]
        jobs = [
            scheduled_job_row(self.registry, row, tick) for row, decision in plans for tick in decision.fire
        ]
        created: dict[int, int] = {}
        if jobs:
            columns = [list(column) for column in zip(*jobs, strict=True)]
            for record in await conn.fetch(SCHEDULES.job_insert_scheduled_many, *columns):
                created[record["schedule_id"]] = max(record["id"], created.get(record["schedule_id"], 0))
        if plans:
            await conn.execute(
                SCHEDULES.schedule_advance_many,
                [row["id"] for row, _ in plans],
                [decision.next_run_at for _, decision in plans],
                [decision.fire[-1] if decision.fire else None for _, decision in plans],
                [created.get(row["id"]) for row, _ in plans],
            )
        return plans, created

    async def _fire_alone(self, conn: AnyConnection, schedule_id: int, now: datetime | None) -> None:
        """One schedule of a refused batch; if its own job is refused, its due ticks are dropped."""
        try:
            async with conn.transaction():
                rows = await conn.fetch(SCHEDULES.schedule_claim_one, schedule_id, now)
                plans, created = await self._fire(conn, rows)
            self._report(plans, created)
        except Exception as exc:
            if not refused_for_values(exc):
                raise
            metrics.schedule_errors.labels("unstorable").inc()
            log.error("schedule_fire_refused", schedule_id=schedule_id, error=str_of(exc))
            async with conn.transaction():
                for row in await conn.fetch(SCHEDULES.schedule_claim_one, schedule_id, now):
                    decision = self._decide(row)
                    metrics.schedule_misfires.inc(len(decision.fire) + decision.skipped)
                    await conn.execute(
                        SCHEDULES.schedule_advance, schedule_id, decision.next_run_at, None, None
                    )

    def _report(self, plans: list[Plan], created: dict[int, int]) -> None:
        """After commit: the ticks fired and skipped, in the log and the metrics."""
        for row, decision in plans:
            if decision.skipped:
                metrics.schedule_misfires.inc(decision.skipped)
                log.warning(
                    "schedule_ticks_skipped",
                    schedule_id=row["id"],
                    schedule=row["name"],
                    skipped=decision.skipped,
                    misfire=row["misfire"],
                    due_since=row["next_run_at"].isoformat(),
                )
        fired = sum(len(decision.fire) for _, decision in plans)
        if fired:
            metrics.schedule_fires.inc(fired)
            log.info("schedules_fired", schedules=len(created), ticks=fired)

    def _decide(self, row: asyncpg.Record) -> Decision:
        try:
            return decide(
                Cron(row["cron"], row["timezone"]),
                row["next_run_at"],
                row["db_now"],
                misfire=Misfire(row["misfire"]),
                grace_s=self.grace_s,
                cap=self.catch_up_cap,
            )
        except Exception as exc:  # cannot come through the API or code: a hand-edited row; park it
            metrics.schedule_errors.labels("invalid").inc()
            log.error("schedule_invalid", schedule_id=row["id"], schedule=row["name"], error=str_of(exc))
            return Decision([], PARKED)

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
