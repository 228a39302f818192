"""Reading EXPLAIN plans of a partitioned jobs (migration 0028): a scan of jobs is a scan of one of
its partitions (jobs_live, jobs_done's ranges and default), and a partitioned index's scans name
its partitions' indexes."""

from __future__ import annotations

import asyncpg


def is_jobs(relation: str | None) -> bool:
    """``relation`` is jobs or one of its partitions."""
    return relation is not None and (relation == "jobs" or relation.startswith(("jobs_live", "jobs_done")))


def is_job_events(relation: str | None) -> bool:
    """``relation`` is job_events or one of its partitions."""
    return relation is not None and (relation == "job_events" or relation.startswith("job_events_"))


async def index_and_partitions(conn: asyncpg.Connection, index: str) -> set[str]:
    """``index``'s name and, for a partitioned index, its partitions' indexes' names."""
    rows = await conn.fetch("SELECT relid::text AS name FROM pg_partition_tree($1::regclass)", index)
    return {index, *(r["name"] for r in rows)}
