"""Claims go on where the last one ended (the producer's ClaimHint), and the hint hides no job.

While a snapshot is held open elsewhere, every job a claim took leaves a dead entry at the head of
the claim index that vacuum may not remove; a claim that started from the head walked them all,
so each claim of a drain cost more than the one before. Here the producer's own claims are read
through EXPLAIN (ANALYZE, BUFFERS) as it sends them, and jobs placed before the hint (a higher
priority) are claimed after a notification at once, and without one within a poll interval.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from skiplock.db.pool import connect as connect_claims
from skiplock.queue import Engine
from skiplock.queue import _producer as producer_module
from skiplock.queue._statements import JOBS
from tests.conftest import make_settings
from tests.support.waiting import wait_until

DEAD = 20_000  # jobs claimed and finished under the held snapshot before the drain
DRAIN = 300
CONCURRENCY = 10
CLAIMS: dict[str, str] = {JOBS.job_claim_many: "job_claim_many", JOBS.job_claim_after: "job_claim_after"}


@dataclass
class ExplainedClaims:
    """Each claim the producer sends, first run under EXPLAIN (ANALYZE, BUFFERS) in a transaction
    rolled back (it changes nothing), then sent as it was: the claim index's buffers per claim of
    ``queue`` (claims of the other queues the engine serves, empty ones, are left out: which of them
    a process serves depends on the tasks the suite imported before)."""

    queue: str = "default"
    buffers: list[tuple[str, int]] = field(default_factory=list)

    def wrap(self, conn: asyncpg.Connection) -> Any:
        claims = self

        class Explaining:
            def __getattr__(self, name: str) -> Any:
                return getattr(conn, name)

            async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
                if sql in CLAIMS and args[0] == claims.queue:
                    transaction = conn.transaction()
                    await transaction.start()
                    try:
                        plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
                    finally:
                        await transaction.rollback()
                    claims.buffers.append((CLAIMS[sql], sum(_claim_index_buffers(plan[0]["Plan"]))))
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows

        return Explaining()


def _claim_index_buffers(node: dict[str, Any]) -> Iterator[int]:
    if node.get("Index Name") == "jobs_claim_idx":
        yield node["Shared Hit Blocks"] + node["Shared Read Blocks"]
    for child in node.get("Plans", []):
        yield from _claim_index_buffers(child)


@pytest.fixture
def explained(monkeypatch: pytest.MonkeyPatch) -> ExplainedClaims:
    claims = ExplainedClaims()

    async def connect_explained(dsn: str, **kwargs: Any) -> Any:
        return claims.wrap(await connect_claims(dsn, **kwargs))

    monkeypatch.setattr(producer_module, "connect", connect_explained)
    return claims


@pytest.fixture
async def holder(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A snapshot held open on a connection of its own: vacuum keeps every row version since."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
    yield conn
    await conn.execute("COMMIT")
    await conn.close()


async def test_claims_read_a_flat_number_of_buffers_while_a_snapshot_holds_back_vacuum(
    dsn: str, db: asyncpg.Connection, registry: Any, holder: asyncpg.Connection, explained: ExplainedClaims
) -> None:
    # Jobs claimed and finished under the snapshot: dead entries at the head of the claim index.
    await db.execute("INSERT INTO jobs (task) SELECT 'noop' FROM generate_series(1, $1)", DEAD)
    await db.execute("UPDATE jobs SET state = 'succeeded', attempts = 1, finished_at = now()")
    ids = [
        r["id"]
        for r in await db.fetch(
            "INSERT INTO jobs (task) SELECT 'noop' FROM generate_series(1, $1) RETURNING id", DRAIN
        )
    ]
    # A poll too slow to matter here: every claim but the first full one may go on from the last.
    settings = make_settings(dsn, concurrency=CONCURRENCY, poll_interval_s=60)
    async with Engine(settings, registry, dsn):
        await wait_until(
            lambda: db.fetchval(
                "SELECT count(*) = $2 FROM jobs WHERE id = ANY($1) AND state = 'succeeded'", ids, DRAIN
            ),
            60,
        )
    assert await db.fetchval("SELECT max(attempts) FROM jobs WHERE id = ANY($1)", ids) == 1
    figures = [b for _, b in explained.buffers]
    full = [b for name, b in explained.buffers if name == "job_claim_many"]
    print(
        f"\n{len(figures)} claims of {DRAIN} jobs behind {DEAD:,} dead entries: claim index buffers"
        f" median {statistics.median(figures):.0f}, max {max(figures)};"
        f" {len(full)} full claims reading {full}"
    )
    assert len(figures) >= DRAIN // CONCURRENCY
    # A full claim walks the dead entries (a few hundred buffers); the others start past them.
    assert min(full) > 100
    assert statistics.median(figures) <= 10
    assert sum(b > 50 for b in figures) <= 4  # the first claim, and those at the queue's end


async def _drain_with_a_late_urgent_job(
    dsn: str, db: asyncpg.Connection, registry: Any, *, notified: bool, poll_interval_s: float
) -> tuple[float, int]:
    """Priority 0 jobs of 10 ms drained one at a time; once a tenth of them ran, a priority 10 job
    comes: enqueued by the client (which notifies) or inserted without any notification. Its
    wait (seconds from its creation to its start) and how many priority 0 jobs started after it."""
    settings = make_settings(dsn, concurrency=1, poll_interval_s=poll_interval_s)
    await db.execute(
        "INSERT INTO jobs (task, args) SELECT 'wait', '{\"seconds\": 0.01}' FROM generate_series(1, $1)",
        DRAIN,
    )
    async with Engine(settings, registry, dsn) as engine:
        await wait_until(
            lambda: db.fetchval("SELECT count(*) >= $1 FROM jobs WHERE state = 'succeeded'", DRAIN // 10), 30
        )
        if notified:
            urgent = (await engine.client.enqueue("noop", {}, priority=10)).id
        else:
            async with db.transaction():  # the insert trigger leaves the wake-up to a caller: none comes
                await db.execute("SELECT set_config('skiplock.wake', 'later', true)")
                urgent = await db.fetchval(
                    "INSERT INTO jobs (task, priority) VALUES ('noop', 10) RETURNING id"
                )
        await wait_until(lambda: db.fetchval("SELECT count(*) = 0 FROM jobs WHERE state <> 'succeeded'"), 60)
    waited = await db.fetchval(
        "SELECT extract(epoch FROM started_at - created_at)::float8 FROM jobs WHERE id = $1", urgent
    )
    after = await db.fetchval(
        "SELECT count(*) FROM jobs WHERE priority = 0"
        " AND started_at > (SELECT started_at FROM jobs WHERE id = $1)",
        urgent,
    )
    print(
        f"\nurgent job ({'notified' if notified else 'silent'}): waited {waited:.3f} s, {after} jobs after it"
    )
    return waited, after


async def test_a_higher_priority_job_enqueued_during_a_drain_is_claimed_next(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    waited, after = await _drain_with_a_late_urgent_job(dsn, db, registry, notified=True, poll_interval_s=60)
    assert waited < 0.5  # the notification voids the hint: the next claim looks from the head
    assert after > DRAIN // 2


async def test_a_job_placed_before_the_hint_without_notification_is_claimed_within_a_poll_interval(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    # The producer is never idle (each job's end wakes it), so the poll's timer never fires: the
    # hint's age alone bounds the wait.
    waited, after = await _drain_with_a_late_urgent_job(
        dsn, db, registry, notified=False, poll_interval_s=0.5
    )
    assert waited < 0.5 + 0.5
    assert after > DRAIN // 2
