"""Every dashboard page warns while a transaction pins the xmin horizon, from the stats /metrics
reads (shared, at most one read every few seconds), and stops once it ends."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from skiplock.db import connect
from skiplock.db.stats import DatabaseStatsReader
from tests.conftest import make_settings
from tests.support.live import app_client
from tests.support.waiting import wait_until

PAGES = ("/ui", "/ui/jobs", "/ui/workers", "/ui/schedules")


async def warned(api: AsyncTestClient[Any], path: str) -> bool:
    response = await api.get(path)
    assert response.status_code == 200, path
    return 'class="db-warning"' in response.text and "A transaction has been open" in response.text


async def test_a_held_snapshot_shows_a_warning_on_every_page(dsn: str, db: asyncpg.Connection) -> None:
    async with app_client(make_settings(dsn, horizon_warning_s=1.0)) as api:
        assert not await warned(api, "/ui")
        reader: DatabaseStatsReader = api.app.state.database_stats  # the one /metrics reads too
        assert (await api.get("/metrics")).status_code == 200
        assert api.app.state.database_stats is reader
        reader.max_age_s = 0.2  # the test need not wait out the 5 s between reads
        holder = await connect(dsn)
        try:
            await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM jobs")

            async def on_every_page() -> bool:
                return all([await warned(api, path) for path in PAGES])

            await wait_until(on_every_page, 15, 0.2)
            await holder.execute("COMMIT")

            async def gone() -> bool:
                return not await warned(api, "/ui")

            await wait_until(gone, 15, 0.2)
        finally:
            await holder.close()
