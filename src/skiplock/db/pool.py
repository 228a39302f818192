"""The asyncpg pool and the codecs every connection gets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from skiplock.errors import DatabaseError

#: A standalone connection or one borrowed from the pool.
AnyConnection = asyncpg.Connection | PoolConnectionProxy

#: What a background loop survives and retries: the server unreachable, a connection dropped (the
#: driver's own state errors after a restart included), a statement refused.
DB_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
#: The same, for calls made under a time limit.
DB_UNAVAILABLE_OR_TIMEOUT: tuple[type[Exception], ...] = (*DB_UNAVAILABLE, TimeoutError)

#: Server errors that say nothing about the statement's values: the server or the connection is
#: going away, out of resources, or the statement lost a race (timeout, lock, serialization).
_TRANSIENT_SERVER_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.OperatorInterventionError,  # class 57: shutdown, cannot connect now, statement timeout
    asyncpg.InsufficientResourcesError,  # class 53: disk, memory, too many connections
    asyncpg.PostgresSystemError,  # class 58: I/O
    asyncpg.TransactionRollbackError,  # class 40: serialization failure, deadlock
    asyncpg.LockNotAvailableError,  # 55P03: lock_timeout
    asyncpg.ReadOnlySQLTransactionError,  # 25006: a standby, mid-failover
)


def is_unavailable(exc: BaseException) -> bool:
    """True when retrying the same statement later may succeed: the database was unreachable, the
    connection broke, or the server refused for a reason of its own. False when the server refused
    the statement for its values (bad data, a constraint, a trigger): retrying the same batch would
    fail forever, so a batched writer splits it to isolate the item instead."""
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)):
        return True
    if isinstance(exc, DatabaseError):
        return True  # connecting failed
    return isinstance(exc, _TRANSIENT_SERVER_ERRORS)


_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


def encode_json(value: Any) -> str | None:
    """JSON text for a jsonb parameter sent as text (None stays NULL). Never raises: what orjson
    refuses (integers past 64 bits, unknown types) goes through the standard library as text."""
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, default=str)


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb and json as Python values through orjson, in binary so COPY can carry them too."""
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "json", encoder=orjson.dumps, decoder=orjson.loads, schema="pg_catalog", format="binary"
    )


async def connect(dsn: str) -> asyncpg.Connection:
    """One standalone connection with skiplock's codecs (the listener and migrations use it)."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}") from exc
    try:
        await init_connection(conn)
    except DB_UNAVAILABLE as exc:
        conn.terminate()
        raise DatabaseError(f"cannot set up the connection: {exc}") from exc
    return conn


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections all carry skiplock's codecs."""
    try:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init_connection)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}") from exc
    assert pool is not None
    return pool


async def close_quietly(conn: asyncpg.Connection, wait_s: float = 2.0) -> None:
    """Close politely if the server answers in time, else drop the socket."""
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), timeout=wait_s)
    except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError):
        conn.terminate()
