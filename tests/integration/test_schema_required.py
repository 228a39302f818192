"""Without auto-migration, a process refuses to start on a schema older than its release."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from skiplock.db.migrate import discover
from skiplock.errors import MigrationError
from skiplock.queue import Engine
from tests.conftest import make_settings


async def test_a_schema_that_lacks_this_releases_migration_is_refused_at_start(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    latest = discover()[-1].version
    await db.execute("DELETE FROM schema_migrations WHERE version = $1", latest)
    engine = Engine(make_settings(dsn), registry, dsn)
    with pytest.raises(MigrationError, match=f"{latest:04d}.*skiplock migrate"):
        await engine.start()


async def test_a_schema_ahead_of_this_release_is_accepted(
    dsn: str, db: asyncpg.Connection, registry: Any
) -> None:
    """A replica of the next release migrated it: this one still runs until it is replaced."""
    await db.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'next_release')")
    async with Engine(make_settings(dsn), registry, dsn) as engine:
        assert engine.healthy
