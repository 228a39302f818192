"""``skiplock.connect()`` finds the database the service uses: the DSN given, ``DATABASE_URL``, or
the embedded server while it runs; awaited or used as an async context manager."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import skiplock
from skiplock.errors import ConfigError
from skiplock.queue.handles import default_client_or_none


@pytest.fixture(autouse=True)
def no_configured_database(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "SKIPLOCK_DATABASE_URL", "SKIPLOCK_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


async def test_connect_awaited_gives_a_client_that_is_the_default_until_closed(dsn: str) -> None:
    client = await skiplock.connect(dsn)
    try:
        job = await client.enqueue("echo", {"size": 1})
        assert (await client.get(job.id)).task == "echo"
        assert default_client_or_none() is client  # what task.enqueue(...) uses
    finally:
        await client.close()
    assert default_client_or_none() is not client


async def test_connect_reads_database_url(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", dsn)
    async with skiplock.connect() as client:
        assert await client.pool.fetchval("SELECT current_database()") == urlsplit(dsn).path.lstrip("/")


async def test_connect_uses_the_embedded_server_while_it_runs(
    pg_admin_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Path(parse_qs(urlsplit(pg_admin_dsn).query).get("host", [""])[0])
    if not (host / "PG_VERSION").is_file():
        pytest.skip("the suite's PostgreSQL is not an embedded server")
    monkeypatch.setenv("SKIPLOCK_DATA_DIR", str(host.parent))  # where `make run` keeps it: <dir>/pg
    async with skiplock.connect() as client:
        assert await client.pool.fetchval("SELECT current_database()") == "postgres"


async def test_connect_without_a_database_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIPLOCK_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"DATABASE_URL is unset and the embedded server under .* is not"):
        await skiplock.connect()
    assert not (tmp_path / "pg").exists()  # nothing started
