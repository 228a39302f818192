"""The database layer: pool, embedded server, migrations, named SQL. It knows no jobs."""

from __future__ import annotations

from skiplock.db.embedded import EmbeddedPostgres
from skiplock.db.migrate import is_current, migrate
from skiplock.db.pool import connect, create_pool

__all__ = ["EmbeddedPostgres", "connect", "create_pool", "is_current", "migrate"]
