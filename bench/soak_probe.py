"""What the soak reads each minute: the jobs finished (by the database's clock), the sizes and dead
tuples of jobs and job_events, and the memory of the PostgreSQL server's processes from /proc."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

#: The engine tables followed; each with its partitions, if it has any (pg_partition_tree lists
#: none for a plain table, so the table itself is added).
TABLES = ("jobs", "job_events")
SIZE_KEYS = ("total", "indexes")

FINISHED = """
SELECT floor(extract(epoch FROM finished_at - $1::timestamptz) / 60)::int AS minute,
       count(*) AS jobs,
       array_agg((extract(epoch FROM started_at - created_at) * 1000)::float8) AS waits_ms
FROM jobs
WHERE finished_at >= $2 AND finished_at < $3 AND started_at IS NOT NULL
GROUP BY 1
"""

SIZES = """
SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint AS total,
       coalesce(sum(pg_indexes_size(t.relid)), 0)::bigint AS indexes,
       coalesce(sum(s.n_dead_tup), 0)::bigint AS dead,
       coalesce(sum(s.n_live_tup), 0)::bigint AS live
FROM (SELECT $1::regclass AS relid UNION SELECT relid FROM pg_partition_tree($1::regclass)) AS t
LEFT JOIN pg_stat_user_tables AS s ON s.relid = t.relid
"""


@dataclass
class Minute:
    """One minute of the run, counted from the first job's created_at."""

    index: int
    jobs: int = 0
    waits_ms: list[float] = field(default_factory=list)

    def add(self, jobs: int, waits_ms: list[float]) -> None:
        self.jobs += jobs
        self.waits_ms.extend(waits_ms)

    def percentile(self, p: int) -> float | None:
        if len(self.waits_ms) < 2:
            return self.waits_ms[0] if self.waits_ms else None
        return statistics.quantiles(self.waits_ms, n=100, method="inclusive")[p - 1]


async def finished_between(
    conn: asyncpg.Connection, origin: datetime, low: datetime, high: datetime
) -> list[tuple[int, int, list[float]]]:
    """(minute, jobs, their enqueue → start waits in ms) of the jobs finished in [low, high)."""
    rows = await conn.fetch(FINISHED, origin, low, high)
    return [(r["minute"], r["jobs"], list(r["waits_ms"])) for r in rows]


async def table_sizes(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Per table: total bytes (heap, TOAST and indexes), index bytes, dead and live tuples."""
    out = {}
    for table in TABLES:
        row = await conn.fetchrow(SIZES, table)
        assert row is not None
        out[table] = dict(row)
    return out


async def postmaster_pid(conn: asyncpg.Connection) -> int | None:
    """The server's postmaster, from its data directory (None: not readable from here)."""
    try:
        directory = await conn.fetchval("SHOW data_directory")
        return int((Path(directory) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError, asyncpg.PostgresError):
        return None


def server_memory(postmaster: int | None) -> dict[str, float | None]:
    """RSS and PSS in MB summed over the postmaster and its children. RSS counts each shared page
    (shared_buffers) once per process that touched it, PSS divides it among them."""
    if postmaster is None:
        return {"rss_mb": None, "pss_mb": None, "processes": None}
    pids = [postmaster, *children(postmaster)]
    rss = pss = 0
    pss_known = True
    for pid in pids:
        rss += kib(Path(f"/proc/{pid}/status"), "VmRSS:") or 0
        got = kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss:")
        pss_known = pss_known and got is not None
        pss += got or 0
    return {
        "rss_mb": round(rss / 1024, 1),
        "pss_mb": round(pss / 1024, 1) if pss_known else None,
        "processes": len(pids),
    }


def children(parent: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid …: comm may hold spaces, so split after its closing parenthesis.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            out.append(int(stat.parent.name))
    return out


def kib(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def megabytes(n: int) -> float:
    return round(n / 2**20, 1)


def as_row(minute: Minute, sizes: dict[str, dict[str, int]], memory: dict[str, Any]) -> dict[str, Any]:
    p50, p99 = minute.percentile(50), minute.percentile(99)
    return {
        "minute": minute.index + 1,
        "jobs": minute.jobs,
        "jobs_per_s": round(minute.jobs / 60, 1),
        "wait_p50_ms": None if p50 is None else round(p50, 2),
        "wait_p99_ms": None if p99 is None else round(p99, 2),
        **{
            (f"{table}_{what}_mb" if what in SIZE_KEYS else f"{table}_{what}"): (
                megabytes(v) if what in SIZE_KEYS else v
            )
            for table, values in sizes.items()
            for what, v in values.items()
        },
        **memory,
    }
