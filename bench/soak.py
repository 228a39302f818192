"""``make soak`` (``python -m bench.soak``): a bounded run at a steady offered load (issue 21).

An embedded PostgreSQL (or SKIPLOCK_BENCH_DATABASE_URL), a fresh migrated database, SOAK_WORKERS
``skiplock worker`` processes with a short retention (SOAK_RETENTION_S, pruned every
SOAK_PRUNE_INTERVAL_S) so finished jobs turn over, and an enqueuer process (bench/soak_enqueuer.py)
offering SOAK_RATE jobs a second, each reporting progress once, for SOAK_MINUTES minutes. Each minute
(counted from the first job's created_at, by the database's clock) it prints the jobs finished in it,
their enqueue → start p50/p99 (started_at - created_at), the sizes of jobs and job_events with their
indexes, their dead tuples, the jobs not finished yet and the server's memory (its processes from
/proc). SOAK_HOLD_SNAPSHOT=1 holds a REPEATABLE READ snapshot open in the middle of the run (5
minutes, or the middle fifth of a shorter run). At the end: the verdict (bench/soak_verdict.py),
printed and written with every minute to bench/results/soak-<timestamp>.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.processes import skiplock
from bench.runner import ROOT, Bench, environment, postgres, prepare_template
from bench.soak_enqueuer import offering
from bench.soak_probe import (
    Minute,
    as_row,
    finished_between,
    postmaster_pid,
    server_memory,
    table_sizes,
)
from bench.soak_verdict import Plan, judge
from skiplock.logging import configure_logging

#: Jobs are counted once their finished_at is this far behind the database's clock: an outcome
#: committed late with an earlier finished_at is not missed.
LAG = timedelta(seconds=2)
SLICE_S = 5.0  # how often the finished jobs are read (a minute's are summed over its slices)
HOLD_S = 300.0
STARTUP_TIMEOUT_S = 120.0


def plan_from_env() -> tuple[Plan, int]:
    minutes = int(os.environ.get("SOAK_MINUTES", "30"))
    if minutes < 1:
        raise SystemExit("SOAK_MINUTES must be at least 1")
    hold = None
    if os.environ.get("SOAK_HOLD_SNAPSHOT", "") not in ("", "0"):
        length = min(HOLD_S, minutes * 60 / 5)
        start = (minutes * 60 - length) / 2
        hold = (start, start + length)
    plan = Plan(
        minutes=minutes,
        rate=float(os.environ.get("SOAK_RATE", "2000")),
        warmup_minutes=max(1, minutes // 10),
        # At least 60 (the engine's minimum). 480 in a run of 10 minutes or more: the history is then
        # eight of its one-minute ranges (the smallest, see queue/_pruner.py), so dropping one whole
        # moves its size by an eighth, inside the size check's 20 % (at 120, two ranges, a range
        # dropped or not was a third of it: the first full run failed that check on that alone).
        # 60 in a shorter run, which is too short to judge sizes anyway.
        retention_s=float(os.environ.get("SOAK_RETENTION_S", "480" if minutes >= 10 else "60")),
        prune_interval_s=float(os.environ.get("SOAK_PRUNE_INTERVAL_S", "10")),
        hold=hold,
    )
    return plan, int(os.environ.get("SOAK_WORKERS", "2"))


async def main() -> bool:
    plan, workers = plan_from_env()
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    print(
        f"soak: {plan.minutes} min, {plan.rate:,.0f} jobs/s offered, {workers} worker processes, "
        f"retention {plan.retention_s:.0f} s (pruned every {plan.prune_interval_s:.0f} s), "
        f"warm-up {plan.warmup_minutes} min"
        + (f", snapshot held from {plan.hold[0]:.0f} s to {plan.hold[1]:.0f} s" if plan.hold else ""),
        flush=True,
    )
    with postgres() as admin_dsn:
        await prepare_template(admin_dsn)
        async with Bench(admin_dsn=admin_dsn, quick=False).database() as dsn:
            rows, offered = await soak(plan, workers, admin_dsn, dsn)
        env = await environment(admin_dsn)
    verdict = judge(plan, rows)
    out = ROOT / "bench" / "results" / f"soak-{started}.json"
    out.parent.mkdir(exist_ok=True)
    settings = {
        "minutes": plan.minutes,
        "rate": plan.rate,
        "workers": workers,
        "warmup_minutes": plan.warmup_minutes,
        "retention_s": plan.retention_s,
        "prune_interval_s": plan.prune_interval_s,
        "hold_snapshot_s": plan.hold,
    }
    document = {"started_at": started, **env, "soak": settings, "enqueuer": offered, "minutes": rows}
    out.write_text(json.dumps({**document, **verdict}, indent=2))
    print()
    print(summary(verdict, offered))
    print(f"written to {out.relative_to(ROOT)}")
    return verdict["pass"] is True


async def soak(
    plan: Plan, workers: int, admin_dsn: str, dsn: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    admin = await asyncpg.connect(admin_dsn)
    try:
        postmaster = await postmaster_pid(admin)
        settings = {"retention_s": str(plan.retention_s), "prune_interval_s": str(plan.prune_interval_s)}
        with skiplock(dsn, "worker", count=workers, **settings):
            await wait_for(conn, "SELECT count(*) >= $1 FROM workers WHERE stopped_at IS NULL", workers)
            with offering(dsn, plan.rate, plan.minutes * 60 + 60) as offered:
                holder: asyncio.Task[None] | None = None
                try:
                    await wait_for(conn, "SELECT EXISTS (SELECT FROM jobs)")
                    origin = await conn.fetchval("SELECT min(created_at) FROM jobs")
                    skew = (await conn.fetchval("SELECT clock_timestamp()") - origin).total_seconds()
                    origin_mono = time.monotonic() - skew
                    if plan.hold is not None:
                        holder = asyncio.create_task(
                            hold_snapshot(dsn, origin_mono + plan.hold[0], origin_mono + plan.hold[1])
                        )
                    rows = await sample(plan, conn, origin, postmaster)
                finally:
                    if holder is not None:  # closed before the database is dropped
                        holder.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await holder
    finally:
        await conn.close()
        await admin.close()
    return rows, offered


async def wait_for(conn: asyncpg.Connection, query: str, *args: object) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not await conn.fetchval(query, *args):
        if time.monotonic() > deadline:
            raise TimeoutError(f"soak start-up: {query} not true after {STARTUP_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)


async def sample(
    plan: Plan, conn: asyncpg.Connection, origin: datetime, postmaster: int | None
) -> list[dict[str, Any]]:
    """Minute by minute, read as the jobs finish (a slice every SLICE_S, so retention prunes none
    unread); each minute printed once its last second is LAG behind the database's clock."""
    minutes: dict[int, Minute] = {}
    rows = []
    low = origin
    for index in range(plan.minutes):
        boundary = origin + timedelta(seconds=60 * (index + 1))
        while True:
            high = min(await conn.fetchval("SELECT clock_timestamp()") - LAG, boundary)
            if high > low:
                for minute, jobs, waits in await finished_between(conn, origin, low, high):
                    minutes.setdefault(minute, Minute(minute)).add(jobs, waits)
                low = high
            if high >= boundary:
                break
            await asyncio.sleep(min(SLICE_S, (boundary - high).total_seconds() + 0.05))
        row = as_row(minutes.pop(index, Minute(index)), await table_sizes(conn), server_memory(postmaster))
        row["unfinished"] = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
        )
        row["snapshot_held"] = plan.disturbed(index) and plan.hold is not None and index * 60 < plan.hold[1]
        rows.append(row)
        print(line(row), flush=True)
    return rows


async def hold_snapshot(dsn: str, start_at: float, end_at: float) -> None:
    """A REPEATABLE READ transaction whose snapshot pins the xmin horizon from start_at to end_at."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    conn = await asyncpg.connect(dsn)
    try:
        transaction = conn.transaction(isolation="repeatable_read")
        await transaction.start()
        xmin = await conn.fetchval(
            "SELECT backend_xmin::text FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        print(f"  snapshot taken (xmin {xmin}), held {end_at - start_at:.0f} s", flush=True)
        await asyncio.sleep(max(0.0, end_at - time.monotonic()))
        await transaction.rollback()
        print("  snapshot released", flush=True)
    finally:
        await conn.close()


def line(row: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    memory = "-" if row["rss_mb"] is None else f"{row['rss_mb']:.0f}"
    if row.get("pss_mb") is not None:
        memory += f" (PSS {row['pss_mb']:.0f})"
    return (
        f"min {row['minute']:>3}: {row['jobs_per_s']:>7,.0f} jobs/s  wait p50 {ms(row['wait_p50_ms'])}"
        f" p99 {ms(row['wait_p99_ms'])} ms  unfinished {row['unfinished']:,}"
        f"  jobs {row['jobs_total_mb']:.1f} MB (idx {row['jobs_indexes_mb']:.1f}) dead {row['jobs_dead']:,}"
        f"  events {row['job_events_total_mb']:.1f} MB (idx {row['job_events_indexes_mb']:.1f})"
        f" dead {row['job_events_dead']:,}  server {memory} MB"
        + ("  [snapshot held]" if row["snapshot_held"] else "")
    )


def summary(verdict: dict[str, Any], offered: dict[str, Any]) -> str:
    def word(ok: bool | None) -> str:
        return "too short to tell" if ok is None else ("pass" if ok else "FAIL")

    checks = verdict["checks"]
    t, p, s, m = checks["throughput"], checks["p99"], checks["sizes"], checks["server_memory"]
    lines = [
        f"enqueuer: {offered.get('sent', 0):,} jobs in {offered.get('seconds', 0):.0f} s",
        f"throughput: median {t['median_jobs_per_s']} jobs/s of {t['offered_jobs_per_s']:,.0f} offered,"
        f" minutes {t['minutes']}: {word(t['pass'])}",
        f"p99 enqueue → start: median {p['median_ms']} ms: {word(p['pass'])}",
        f"sizes from minute {s['from_minute']}: jobs {s['jobs_total_mb']['first']} → max"
        f" {s['jobs_total_mb']['max']} MB, job_events {s['job_events_total_mb']['first']} → max"
        f" {s['job_events_total_mb']['max']} MB: {word(s['pass'])}",
        f"server memory ({m['measure']}): {m['first']} → {m['last']} MB: {word(m['pass'])}",
    ]
    if (r := checks.get("recovery")) is not None:
        lines.append(
            f"recovery after the snapshot's release: minute {r['minute']}, {r['jobs_per_s']} jobs/s:"
            f" {word(r['pass'])}"
        )
    undecided = f" ({verdict['undecided']} check(s) too short to tell)" if verdict["undecided"] else ""
    outcome = "too short to tell" if verdict["pass"] is None else ("PASS" if verdict["pass"] else "FAIL")
    lines.append(f"soak: {outcome}{undecided}")
    return "\n".join(lines)


if __name__ == "__main__":
    configure_logging("warning", "console")
    sys.exit(0 if asyncio.run(main()) else 1)
