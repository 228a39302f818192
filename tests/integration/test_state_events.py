"""Every statement that changes a job's state writes that state event itself, at the next seq.

No trigger does it (migration 0011): a statement that changed a state without its event would
leave a hole in the job's stream that no subscriber could ever fill. Each case runs one statement
on one job and reads back exactly the events it wrote.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from skiplock.db.sqlfile import all_statements
from skiplock.queue._statements import EVENTS, JOBS, QUEUES, SCHEDULES
from skiplock.queue.models import JobState
from tests.factories import job

OWNER = "factory"  # the lease owner of tests.factories' running jobs

#: Statements that update jobs without changing a state: no state event is theirs to write.
NO_STATE_CHANGE = {"jobs.job_heartbeat", "events.event_write_many"}


def updates_jobs(sql: str) -> bool:
    return "UPDATE jobs" in sql


def test_every_statement_that_updates_jobs_is_classified() -> None:
    """A new statement that updates jobs must say whether it changes a state (and then write its
    event, as the cases below check) or not."""
    statements = {
        **{f"jobs.{k}": v for k, v in all_statements(JOBS).items()},
        **{f"events.{k}": v for k, v in all_statements(EVENTS).items()},
        **{f"queues.{k}": v for k, v in all_statements(QUEUES).items()},
        **{f"schedules.{k}": v for k, v in all_statements(SCHEDULES).items()},
    }
    updating = {name for name, sql in statements.items() if updates_jobs(sql)}
    changing = updating - NO_STATE_CHANGE
    assert changing == {f"jobs.{name}" for name in CASES}
    for name in changing:
        assert "INSERT INTO job_events" in statements[name], name


async def state_events(tx: asyncpg.Connection, job_id: int) -> list[dict[str, Any]]:
    rows = await tx.fetch(
        "SELECT seq, data FROM job_events WHERE job_id = $1 AND kind = 'state' ORDER BY seq", job_id
    )
    return [{"seq": r["seq"], **r["data"]} for r in rows]


async def event_seq(tx: asyncpg.Connection, job_id: int) -> int:
    seq: int = await tx.fetchval("SELECT event_seq FROM jobs WHERE id = $1", job_id)
    return seq


Case = Callable[[asyncpg.Connection], Awaitable[tuple[int, list[dict[str, Any]]]]]


async def claim(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx)
    rows = await tx.fetch(JOBS.job_claim_many, "default", 10, "me", 30.0, None, ["noop"], [], 0)
    assert [r["id"] for r in rows] == [job_id]
    return job_id, [{"state": "running", "previous": "queued", "attempt": 1, "worker": "me"}]


async def claim_after(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    before = await job(tx)
    job_id = await job(tx)
    hint = await tx.fetchrow("SELECT priority, run_at, id FROM jobs WHERE id = $1", before)
    assert hint is not None
    rows = await tx.fetch(JOBS.job_claim_after, "default", 10, "me", 30.0, None, ["noop"], [], 0, *hint)
    assert [r["id"] for r in rows] == [job_id]  # the job after the hint, not the one it names
    return job_id, [{"state": "running", "previous": "queued", "attempt": 1, "worker": "me"}]


async def claim_limited(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx)
    await tx.execute(
        "INSERT INTO queues (name, global_concurrency, rate_limit, rate_period_s) VALUES ('default', 5, 5, 1)"
    )
    rows = await tx.fetch(JOBS.job_claim_limited, "default", 10, "me", 30.0, None, ["noop"], [], 0)
    assert [r["id"] for r in rows] == [job_id]
    return job_id, [{"state": "running", "previous": "queued", "attempt": 1, "worker": "me"}]


async def finish_succeeded(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING)
    args = [[job_id], [1], ["succeeded"], ['{"ok": 1}'], [None], [0.0], [None], OWNER, 0]
    assert len(await tx.fetch(JOBS.job_finish_many, *args)) == 1
    return job_id, [{"state": "succeeded", "previous": "running", "attempt": 1}]


async def finish_retried_with_error(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING)
    error = {"attempt": 1, "type": "Boom", "message": "no"}
    args = [[job_id], [1], ["queued"], [None], [json.dumps(error)], [5.0], [None], OWNER, 0]
    assert len(await tx.fetch(JOBS.job_finish_many, *args)) == 1
    return job_id, [{"state": "queued", "previous": "running", "attempt": 1, "error": error}]


async def finish_snoozed(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING, max_attempts=1)
    args = [[job_id], [1], ["snoozed"], [None], [None], [5.0], [None], OWNER, 0]
    assert len(await tx.fetch(JOBS.job_finish_many, *args)) == 1
    row = await tx.fetchrow(
        "SELECT attempts, max_attempts, errors, run_at - now() AS wait FROM jobs WHERE id = $1", job_id
    )
    assert row is not None
    assert (row["attempts"], row["max_attempts"], row["errors"]) == (1, 2, [])
    assert row["wait"].total_seconds() == 5.0
    return job_id, [{"state": "queued", "previous": "running", "attempt": 1}]


async def finish_snoozed_after_a_cancel_request(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING, cancel_requested=True)
    args = [[job_id], [1], ["snoozed"], [None], [None], [5.0], [None], OWNER, 0]
    assert len(await tx.fetch(JOBS.job_finish_many, *args)) == 1
    row = await tx.fetchrow("SELECT max_attempts, finished_at FROM jobs WHERE id = $1", job_id)
    assert row is not None
    assert row["max_attempts"] == 3  # the factory's default, not one more
    assert row["finished_at"] is not None
    return job_id, [{"state": "cancelled", "previous": "running", "attempt": 1}]


async def finish_not_ours(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING)
    args = [[job_id], [1], ["succeeded"], [None], [None], [0.0], [None], "someone else", 0]
    assert await tx.fetch(JOBS.job_finish_many, *args) == []
    return job_id, []


async def fail_outcome_not_stored(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING)
    assert await tx.fetch(JOBS.job_fail_outcome_not_stored, job_id, 1, OWNER, "refused", 0)
    error = await tx.fetchval("SELECT errors -> -1 FROM jobs WHERE id = $1", job_id)
    assert error["type"] == "OutcomeNotStored"
    return job_id, [{"state": "failed", "previous": "running", "attempt": 1, "error": error}]


async def rescue_expired(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING, lease_expires_at=None)
    await tx.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = $1", job_id)
    rows = await tx.fetch(JOBS.job_rescue_expired, [job_id], [0.0])
    assert [(r["id"], r["state"]) for r in rows] == [(job_id, "queued")]
    error = await tx.fetchval("SELECT errors -> -1 FROM jobs WHERE id = $1", job_id)
    assert error["type"] == "LeaseLost"
    return job_id, [{"state": "queued", "previous": "running", "attempt": 1, "error": error}]


async def expire_queued(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, expires_at=None)
    await tx.execute("UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = $1", job_id)
    assert [r["id"] for r in await tx.fetch(JOBS.job_expire_queued, 10, None)] == [job_id]
    error = await tx.fetchval("SELECT errors -> -1 FROM jobs WHERE id = $1", job_id)
    assert error["type"] == "expired"
    return job_id, [{"state": "cancelled", "previous": "queued", "attempt": 0, "error": error}]


async def release_many(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING, cancel_requested=True)
    rows = await tx.fetch(JOBS.job_release_many, [job_id], OWNER, [1], [0.0], 0)
    assert [r["state"] for r in rows] == ["cancelled"]
    return job_id, [{"state": "cancelled", "previous": "running", "attempt": 1}]


async def release_unstarted(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING)
    assert await tx.fetch(JOBS.job_release_unstarted, [job_id], OWNER, [1], 0)
    return job_id, [{"state": "queued", "previous": "running", "attempt": 0}]


async def release_untracked(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING)
    await tx.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = $1", job_id)
    assert await tx.fetch(JOBS.job_release_untracked, OWNER, [], 1.0)
    return job_id, [{"state": "queued", "previous": "running", "attempt": 1}]


async def release_unrun(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.RUNNING)
    assert await tx.fetch(JOBS.job_release_unrun, OWNER, None, [])
    return job_id, [{"state": "queued", "previous": "running", "attempt": 0}]


async def cancel_queued(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx)
    row = await tx.fetchrow(JOBS.job_cancel, job_id)
    assert row is not None
    assert row["state"] == "cancelled"
    return job_id, [{"state": "cancelled", "previous": "queued", "attempt": 0}]


async def cancel_waiting(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    """A workflow's step not yet let go: cancelled outright, its event saying it left waiting."""
    job_id = await job(tx, JobState.WAITING)
    row = await tx.fetchrow(JOBS.job_cancel, job_id)
    assert row is not None
    assert (row["state"], row["cancel_requested"]) == ("cancelled", False)
    return job_id, [{"state": "cancelled", "previous": "waiting", "attempt": 0}]


async def cancel_running(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    """Only a flag for its worker: no state change, no event."""
    job_id = await job(tx, JobState.RUNNING)
    row = await tx.fetchrow(JOBS.job_cancel, job_id)
    assert row is not None
    assert (row["state"], row["cancel_requested"]) == ("running", True)
    return job_id, []


async def retry_failed(tx: asyncpg.Connection) -> tuple[int, list[dict[str, Any]]]:
    job_id = await job(tx, JobState.FAILED)
    row = await tx.fetchrow(JOBS.job_retry, job_id)
    assert row is not None
    assert (row["state"], row["max_attempts"]) == ("queued", 4)
    return job_id, [{"state": "queued", "previous": "failed", "attempt": 3}]


#: Statement name → the cases that run it.
CASES: dict[str, list[Case]] = {
    "job_claim_many": [claim],
    "job_claim_after": [claim_after],
    "job_claim_limited": [claim_limited],
    "job_finish_many": [
        finish_succeeded,
        finish_retried_with_error,
        finish_snoozed,
        finish_snoozed_after_a_cancel_request,
        finish_not_ours,
    ],
    "job_fail_outcome_not_stored": [fail_outcome_not_stored],
    "job_rescue_expired": [rescue_expired],
    "job_expire_queued": [expire_queued],
    "job_release_many": [release_many],
    "job_release_unstarted": [release_unstarted],
    "job_release_untracked": [release_untracked],
    "job_release_unrun": [release_unrun],
    "job_cancel": [cancel_queued, cancel_waiting, cancel_running],
    "job_retry": [retry_failed],
}


@pytest.mark.parametrize("case", [c for cases in CASES.values() for c in cases], ids=lambda c: c.__name__)
async def test_a_state_change_writes_its_event_at_the_next_seq(tx: asyncpg.Connection, case: Case) -> None:
    job_id, expected = await case(tx)
    written = await state_events(tx, job_id)
    assert [{k: v for k, v in e.items() if k != "seq"} for e in written] == expected
    assert [e["seq"] for e in written] == list(range(1, len(expected) + 1))
    assert await event_seq(tx, job_id) == len(expected)


async def test_seqs_follow_on_from_progress_events_through_a_whole_run(tx: asyncpg.Connection) -> None:
    """Claim, a progress report, a retry, a claim, success: one gapless stream."""
    job_id = await job(tx)
    claims: list[Any] = [JOBS.job_claim_many, "default", 10, "me", 30.0, None, ["noop"], [], 0]
    await tx.fetch(*claims)
    await tx.fetch(EVENTS.event_write_many, [job_id], ["progress"], ['{"fraction": 0.5}'], [1], "me")
    await tx.fetch(JOBS.job_finish_many, [job_id], [1], ["queued"], [None], [None], [0.0], [None], "me", 0)
    await tx.fetch(*claims)
    await tx.fetch(JOBS.job_finish_many, [job_id], [2], ["succeeded"], [None], [None], [0.0], [None], "me", 0)
    rows = await tx.fetch("SELECT seq, kind, data FROM job_events WHERE job_id = $1 ORDER BY seq", job_id)
    kinds = [(r["seq"], r["kind"], r["data"].get("state")) for r in rows]
    assert kinds == [
        (1, "state", "running"),
        (2, "progress", None),
        (3, "state", "queued"),
        (4, "state", "running"),
        (5, "state", "succeeded"),
    ]
    assert await event_seq(tx, job_id) == 5


async def test_a_state_change_by_a_previous_release_gets_its_event_from_the_compatibility_trigger(
    tx: asyncpg.Connection,
) -> None:
    """In a rolling deploy, replicas of the previous release change states with statements that
    do not take the seq: the trigger of migration 0011 writes their events."""
    job_id = await job(tx, JobState.RUNNING)
    await tx.execute(  # the previous release's retry outcome, in the shape it wrote it
        """UPDATE jobs SET state = 'queued', errors = errors || '[{"type": "Boom"}]',
                          lease_owner = NULL, lease_expires_at = NULL WHERE id = $1""",
        job_id,
    )
    await tx.execute("UPDATE jobs SET state = 'cancelled', finished_at = now() WHERE id = $1", job_id)
    assert await state_events(tx, job_id) == [
        {"seq": 1, "state": "queued", "previous": "running", "attempt": 1, "error": {"type": "Boom"}},
        {"seq": 2, "state": "cancelled", "previous": "queued", "attempt": 1},
    ]
    assert await event_seq(tx, job_id) == 2


async def test_a_deleted_jobs_events_go_with_it(tx: asyncpg.Connection) -> None:
    gone, kept = await job(tx), await job(tx)
    await tx.fetch(JOBS.job_claim_many, "default", 10, "me", 30.0, None, ["noop"], [], 0)
    await tx.execute("DELETE FROM jobs WHERE id = $1", gone)
    assert await tx.fetchval("SELECT array_agg(DISTINCT job_id) FROM job_events") == [kept]
