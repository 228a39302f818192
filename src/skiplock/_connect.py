"""``skiplock.connect()``: a client for the database the service uses, from a script or a web app."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from skiplock.db.embedded import EmbeddedPostgres
from skiplock.errors import ConfigError
from skiplock.queue.client import Client
from skiplock.queue.tasks import TaskRegistry
from skiplock.settings import Settings


def service_database_url(dsn: str | None = None) -> str:
    """``dsn``, else ``DATABASE_URL``, else the embedded server's URL while it runs (``make run``
    started it); a ConfigError saying what to do when none of them is there."""
    if dsn:
        return dsn
    settings = Settings.load()
    if settings.database_url:
        return settings.database_url
    server = EmbeddedPostgres(settings.data_dir / "pg")
    if not server.running:
        raise ConfigError(
            f"no database: DATABASE_URL is unset and the embedded server under {server.data_dir} is not"
            " running (`make run` or `skiplock serve` in this directory starts it)"
        )
    return server.dsn()


class Connecting:
    """What :func:`connect` returns: await it for the client (close it with ``await
    client.close()``), or ``async with`` it to have the client closed at the block's end."""

    def __init__(self, dsn: str | None, registry: TaskRegistry | None, min_size: int, max_size: int) -> None:
        self._dsn = dsn
        self._options: dict[str, Any] = {"registry": registry, "min_size": min_size, "max_size": max_size}
        self._client: Client | None = None

    async def _open(self) -> Client:
        options = dict(self._options)
        if self._dsn is None:  # the service's database, through its pooler if it has one
            settings = Settings.load()
            if settings.database_url:
                options.update(
                    transaction_pooler=settings.transaction_pooler, listen_dsn=settings.listen_database_url
                )
        return await Client.connect(service_database_url(self._dsn), **options)

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._open()
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def connect(
    dsn: str | None = None,
    *,
    registry: TaskRegistry | None = None,
    min_size: int = 1,
    max_size: int = 10,
) -> Connecting:
    """A :class:`Client` on its own pool: ``async with skiplock.connect() as client:`` (or
    ``client = await skiplock.connect()``). The database is ``dsn``, else ``DATABASE_URL``, else
    the embedded server ``make run`` started (it is not started here); with ``DATABASE_URL``,
    ``SKIPLOCK_DATABASE_POOLER`` and ``SKIPLOCK_LISTEN_DATABASE_URL`` apply too. Args are checked against
    ``registry``, else every ``@task`` imported so far (the built-ins included)."""
    return Connecting(dsn, registry, min_size, max_size)
