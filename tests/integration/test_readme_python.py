"""The README's "Writing tasks" examples run as written: its tasks (``myapp/jobs.py``), enqueueing
in your own transaction (``myapp/orders.py``), waiting for a result (``myapp/sizes.py``), a
workflow (``myapp/albums.py``) and a schedule declared in code (``myapp/reports.py``), against a
real database and a worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest

import skiplock
from skiplock.queue import Engine, JobState, Task, TaskRegistry
from tests.conftest import make_settings
from tests.support.readme import readme_files, readme_package
from tests.support.waiting import wait_until


@pytest.fixture
def myapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    with readme_package(tmp_path, monkeypatch) as modules:
        yield modules


def test_the_readme_names_the_files_its_examples_are() -> None:
    assert {
        "myapp/jobs.py",
        "myapp/orders.py",
        "myapp/sizes.py",
        "myapp/reports.py",
        "myapp/albums.py",
    } <= set(readme_files())


async def test_the_writing_tasks_examples_run_as_written(
    dsn: str, db: asyncpg.Connection, myapp: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, orders, sizes, reports, albums = (
        myapp[name] for name in ("jobs", "orders", "sizes", "reports", "albums")
    )
    tasks = TaskRegistry([v for m in (jobs, reports) for v in vars(m).values() if isinstance(v, Task)])
    assert {t.name for t in tasks} == {"thumbnail", "publish", "daily_report"}
    await db.execute("CREATE TABLE orders (id bigint PRIMARY KEY, photo_url text NOT NULL)")
    monkeypatch.setenv("DATABASE_URL", dsn)  # what skiplock.connect() reads, as a service's replicas do
    async with Engine(make_settings(dsn), tasks, dsn):
        await orders.main()
        assert await db.fetchval("SELECT photo_url FROM orders WHERE id = 1") == "https://example.com/cat.png"

        async def ended() -> list[asyncpg.Record] | None:
            rows = await db.fetch("SELECT task, state, result, parent_id FROM jobs ORDER BY id")
            return rows if [r["state"] for r in rows][1:] == ["succeeded", "succeeded"] else None

        delayed, typed, child = await wait_until(ended, 30, 0.05)
        # enqueued by name, due in 10 s; the typed one ran and handed on to its child "publish"
        assert (delayed["task"], delayed["state"]) == ("thumbnail", JobState.QUEUED.value)
        assert (typed["task"], typed["result"]) == ("thumbnail", {"bytes": 1234})
        assert (child["task"], child["result"]) == ("publish", "published https://example.com/cat.png")

        async with skiplock.connect() as client:
            assert await sizes.thumbnail_bytes(client, "https://example.com/dog.png") == 1234
            assert "daily_report" in {s.name for s in await client.schedules.all()}
            await db.execute("CREATE TABLE albums (id bigint PRIMARY KEY)")
            urls = ["https://example.com/a.png", "https://example.com/b.png"]
            assert await albums.make_album(client, 7, urls) == {"callback": f"published {urls[0]}"}
            assert await db.fetchval("SELECT count(*) FROM albums") == 1
