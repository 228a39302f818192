"""Released connections: the tasks' pool resets every session, the engine's skips the round trip.

The engine's pool runs only skiplock's own statements, none of which leaves session state, so
asyncpg's reset query (a round trip per release) is not sent there; a pool handed to tasks must
still reset whatever a task left behind. Either way an open transaction is rolled back.
"""

from __future__ import annotations

import pytest

from skiplock.db.pool import create_pool


@pytest.mark.parametrize("reset_sessions", [True, False])
async def test_a_released_session_keeps_its_settings_only_without_reset(
    dsn: str, reset_sessions: bool
) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1, reset_sessions=reset_sessions)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET statement_timeout = '123s'")
        async with pool.acquire() as conn:
            kept = await conn.fetchval("SHOW statement_timeout") == "123s"
        assert kept is not reset_sessions
    finally:
        await pool.close()


@pytest.mark.parametrize("reset_sessions", [True, False])
async def test_a_transaction_left_open_is_rolled_back_on_release(dsn: str, reset_sessions: bool) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1, reset_sessions=reset_sessions)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE left_open (n int)")  # and never committed
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('left_open')") is None
    finally:
        await pool.close()
