"""The PostgreSQL a test session runs on: ``SKIPLOCK_TEST_DATABASE_URL`` (a server where it may
create databases), else an embedded server in a temporary directory, for the session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skiplock.db.embedded import EmbeddedPostgres

#: Tests never test the durability of PostgreSQL itself; these make its commits cheap.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@contextmanager
def embedded_server() -> Iterator[str]:
    """An embedded PostgreSQL in a temporary directory (the ``embedded`` extra), its admin DSN
    yielded; stopped and removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="skpg-", dir="/tmp"))  # short: a socket path has a limit
    server = EmbeddedPostgres(directory / "pg", settings=FAST_SETTINGS)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def session_server() -> Iterator[str]:
    """The admin DSN of the session's server: ``SKIPLOCK_TEST_DATABASE_URL``, else embedded."""
    given = os.environ.get("SKIPLOCK_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with embedded_server() as dsn:
        yield dsn
