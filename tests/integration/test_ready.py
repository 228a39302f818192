"""/ready tells the truth about the database, and answers in time even when it hangs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import make_settings
from tests.support.faults import backend_pids, frozen_backends, private_postgres
from tests.support.live import app_client
from tests.support.waiting import wait_until


async def status(api: AsyncTestClient[Any], path: str) -> int:
    return (await api.get(path)).status_code


async def test_ready_answers_503_within_its_limit_while_the_database_hangs_then_200() -> None:
    async with private_postgres() as pg:
        settings = make_settings(pg.dsn, worker=False, scheduler=False, pool_min_size=1, pool_max_size=2)
        async with app_client(settings) as api:
            assert await status(api, "/ready") == 200
            pids = await backend_pids(pg.admin_dsn, "skiplock", application_name="skiplock")
            assert pids
            with frozen_backends(pids):
                started = time.monotonic()
                answer = await asyncio.wait_for(api.get("/ready"), 30)
                took_s = time.monotonic() - started
                health = await status(api, "/health")
            assert answer.status_code == 503
            assert answer.json()["checks"]["database"] is False
            assert took_s < 5
            assert health == 200
            await wait_until(lambda: _is(status(api, "/ready"), 200), 5, 0.1)


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)
