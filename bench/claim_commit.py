"""claim-commit: what durable claims cost. The engine's claim statement (``job_claim_many``, 10
jobs a claim) on two connections to one database: one commits durably, as the engine's claims do,
the other with ``synchronous_commit = off``, as claims did before they were made durable. The two
alternate claim by claim, so both see the same table and the same load; the figure is the
statement's round trip from this process, the median of each side's claims."""

from __future__ import annotations

import statistics
import time

from bench.drain import CLAIM_SQL, fill_noop_jobs
from bench.runner import Bench
from skiplock.db.pool import connect

NAME = "claim-commit"
CLAIM_BATCH = 10
CLAIMS = (2_000, 500)  # per side (full, quick)


async def run(bench: Bench) -> None:
    claims = bench.size(*CLAIMS)
    async with bench.database() as dsn:
        setup = await connect(dsn)
        durable = await connect(dsn)
        fast = await connect(dsn)
        try:
            await fill_noop_jobs(setup, 2 * claims * CLAIM_BATCH)
            await durable.execute("SET synchronous_commit = on")  # whatever the server's default
            await fast.execute("SET synchronous_commit = off")
            args: tuple[object, ...] = ("default", CLAIM_BATCH, "bench", 60.0, None, ["bench_noop"], [], 0)
            times: dict[str, list[float]] = {"durable": [], "off": []}
            for _ in range(claims):
                for side, conn in (("durable", durable), ("off", fast)):
                    started = time.perf_counter()
                    rows = await conn.fetch(CLAIM_SQL["job_claim_many"], *args)
                    times[side].append(time.perf_counter() - started)
                    if len(rows) != CLAIM_BATCH:
                        raise RuntimeError(f"a claim took {len(rows)} of {CLAIM_BATCH} jobs")
        finally:
            for conn in (setup, durable, fast):
                await conn.close()
    off_ms = statistics.median(times["off"]) * 1000
    durable_ms = statistics.median(times["durable"]) * 1000
    bench.record(NAME, "claim of 10, commit off", off_ms, "ms")
    bench.record(
        NAME,
        "claim of 10, durable",
        durable_ms,
        "ms",
        floor=f"{NAME}.claim of 10, commit off",
        versus="difference",
    )
