"""The shared runner: a PostgreSQL, a fresh database per workload, one table, one JSON file."""

from __future__ import annotations

import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from skiplock.db import EmbeddedPostgres
from skiplock.db.admin import create_database, create_migrated_template, drop_database

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "bench_template"


@dataclass
class Measurement:
    workload: str
    metric: str
    value: float
    unit: str
    floor: str | None = None  # the floor metric this one is compared with: "workload.metric"
    versus: str = "ratio"  # shown against its floor as a ratio, or as a "difference" in its unit
    target: str = ""


@dataclass
class Bench:
    """What a workload gets: the server, sizes (full or quick) and a place for its numbers."""

    admin_dsn: str
    quick: bool
    results: list[Measurement] = field(default_factory=list)
    _names: Iterator[int] = field(default_factory=itertools.count)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def record(self, workload: str, metric: str, value: float, unit: str, **extra: Any) -> None:
        self.results.append(Measurement(workload, metric, round(value, 2), unit, **extra))

    def value(self, workload: str, metric: str) -> float | None:
        return next((m.value for m in self.results if (m.workload, m.metric) == (workload, metric)), None)

    @asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A fresh migrated database, dropped afterwards."""
        name = f"bench_{os.getpid()}_{next(self._names)}"
        try:
            yield await create_database(self.admin_dsn, name, template=TEMPLATE)
        finally:
            await drop_database(self.admin_dsn, name)


Workload = Callable[[Bench], Awaitable[None]]

#: Runs of the short figures (a drain or a COPY lasts a second or two, so one burst of other load
#: can halve a single run); the floor and the engine figure compared with it are run alike.
REPEATS = 3


async def median_of(runs: int, measure: Callable[[], Awaitable[float]]) -> float:
    """The median of ``runs`` measurements, taken one after another."""
    return statistics.median([await measure() for _ in range(runs)])


@contextmanager
def postgres() -> Iterator[str]:
    """SKIPLOCK_BENCH_DATABASE_URL, or an embedded server with default settings in a temp dir."""
    given = os.environ.get("SKIPLOCK_BENCH_DATABASE_URL")
    if given:
        yield given
        return
    directory = Path(tempfile.mkdtemp(prefix="skbench-", dir="/tmp"))
    server = EmbeddedPostgres(directory / "pg")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def prepare_template(admin_dsn: str) -> None:
    await create_migrated_template(admin_dsn, TEMPLATE)


async def environment(admin_dsn: str) -> dict[str, Any]:
    """The machine, the server and the code the numbers came from."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        names = [
            "shared_buffers",
            "synchronous_commit",
            "fsync",
            "wal_level",
            "max_connections",
            "work_mem",
            "max_wal_size",
        ]
        rows = await conn.fetch("SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)", names)
    finally:
        await conn.close()
    return {
        **machine_and_commit(),
        "postgres": {
            "version": version,
            "settings": {r["name"]: f"{r['setting']}{r['unit'] or ''}" for r in rows},
            "source": "SKIPLOCK_BENCH_DATABASE_URL"
            if os.environ.get("SKIPLOCK_BENCH_DATABASE_URL")
            else "embedded",
        },
    }


def machine_and_commit() -> dict[str, Any]:
    mem_kib = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "machine": {
            "cores": os.cpu_count(),
            "memory_gib": round(mem_kib / 2**20, 1),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "skiplock_commit": commit + ("-dirty" if dirty else ""),
    }


def render(results: list[Measurement], bench: Bench) -> str:
    lines = [f"{'workload':<16} {'metric':<22} {'value':>12} {'unit':<8} {'vs floor':>11}  target", "-" * 88]
    for m in results:
        shown = ""
        if (vs := versus_floor(m, bench)) is not None:
            shown = f"{vs:+.2f} {m.unit}" if m.versus == "difference" else f"{vs:.0%}"
        lines.append(f"{m.workload:<16} {m.metric:<22} {m.value:>12,.2f} {m.unit:<8} {shown:>11}  {m.target}")
    return "\n".join(lines)


def versus_floor(m: Measurement, bench: Bench) -> float | None:
    """``m`` against its floor of the same run: value / floor, or value - floor; None without one."""
    if not m.floor:
        return None
    floor = bench.value(*m.floor.split(".", 1))
    if not floor:
        return None
    return m.value - floor if m.versus == "difference" else m.value / floor


def against_floor(results: list[Measurement], bench: Bench, versus: str) -> dict[str, float]:
    out = {}
    for m in results:
        if m.versus == versus and (vs := versus_floor(m, bench)) is not None:
            out[f"{m.workload}.{m.metric}"] = round(vs, 3)
    return out


def as_json(bench: Bench, env: dict[str, Any], started: str) -> dict[str, Any]:
    return {
        "started_at": started,
        "quick": bench.quick,
        **env,
        "results": [asdict(m) for m in bench.results],
        "ratios_to_floor": against_floor(bench.results, bench, "ratio"),
        "differences_to_floor": against_floor(bench.results, bench, "difference"),
    }
