"""Job rows in any state, with defaults that make sense for that state."""

from __future__ import annotations

from typing import Any

import asyncpg

from skiplock.queue.models import JobState

_DEFAULTS: dict[JobState, dict[str, Any]] = {
    JobState.WAITING: {},
    JobState.QUEUED: {},
    JobState.RUNNING: {
        "attempts": "1",
        "started_at": "now()",
        "lease_owner": "'factory'",
        "lease_expires_at": "now() + interval '30 seconds'",
    },
    JobState.SUCCEEDED: {"attempts": "1", "started_at": "now()", "finished_at": "now()"},
    JobState.FAILED: {"attempts": "3", "started_at": "now()", "finished_at": "now()"},
    JobState.CANCELLED: {"finished_at": "now()"},
}


async def job(
    conn: asyncpg.Connection,
    state: JobState = JobState.QUEUED,
    *,
    task: str = "noop",
    queue: str = "default",
    **columns: Any,
) -> int:
    """Insert one job directly (bypassing the client) and return its id.

    Values in the state defaults are SQL expressions; values passed in ``columns`` are parameters.
    """
    expressions = dict(_DEFAULTS[state])
    names = ["state", "task", "queue"]
    values: list[Any] = [state.value, task, queue]
    for name, value in columns.items():
        expressions.pop(name, None)
        names.append(name)
        values.append(value)
    placeholders = [f"${i}" for i in range(1, len(values) + 1)]
    placeholders[0] = "$1::job_state"
    sql = (
        f"INSERT INTO jobs ({', '.join([*names, *expressions])}) "
        f"VALUES ({', '.join([*placeholders, *expressions.values()])}) RETURNING id"
    )
    job_id: int = await conn.fetchval(sql, *values)
    return job_id
