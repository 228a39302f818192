"""``python -m bench [--quick] [--only NAME …]``: run the workloads, print one table, write JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

from bench import (
    claim_commit,
    dashboard,
    drain,
    enqueue,
    floor,
    http_batch,
    http_enqueue,
    import_csv,
    latency,
    process_pool,
    scheduler,
    websocket_fanout,
    workflows,
)
from bench.runner import ROOT, Bench, as_json, environment, postgres, prepare_template, render
from skiplock.logging import configure_logging

# The floor runs first so every engine figure can be shown against it (the same run, the same server).
WORKLOADS = {
    "floor": floor.run,
    "enqueue": enqueue.run,
    "drain": drain.run,
    "claim-commit": claim_commit.run,
    "latency": latency.run,
    "http-enqueue": http_enqueue.run,
    "http-batch": http_batch.run,
    "ws-fanout": websocket_fanout.run,
    "scheduler": scheduler.run,
    "dashboard": dashboard.run,
    "import-csv": import_csv.run,
    "workflows": workflows.run,
    "process-pool": process_pool.run,
}


async def main(quick: bool, only: list[str]) -> None:
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with postgres() as admin_dsn:
        await prepare_template(admin_dsn)
        bench = Bench(admin_dsn=admin_dsn, quick=quick)
        for name, workload in WORKLOADS.items():
            if only and name not in only:
                continue
            print(f"running {name} …", flush=True)
            await workload(bench)
        env = await environment(admin_dsn)
    print()
    print(render(bench.results, bench))
    out = ROOT / "bench" / "results" / f"{started}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(as_json(bench, env, started), indent=2))
    print(
        f"\n{env['machine']['cores']} cores, {env['machine']['memory_gib']} GiB, PostgreSQL "
        f"{env['postgres']['version']} ({env['postgres']['source']}), skiplock {env['skiplock_commit']}"
    )
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--quick", action="store_true", help="small counts, under a minute")
    parser.add_argument("--only", nargs="*", default=[], choices=sorted(WORKLOADS))
    args = parser.parse_args()
    configure_logging("warning", "console")
    asyncio.run(main(args.quick, args.only))
