"""The asyncpg pool and the codecs every connection gets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import structlog
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from skiplock.db.moved import Connection
from skiplock.db.sqlfile import Statement, load_statements
from skiplock.db.storable import json_bytes, json_text, text_bytes
from skiplock.errors import (
    DatabaseError,
    DatabaseUnavailableError,
    StatementRefusedError,
    StatementStoppedError,
)

log = structlog.get_logger("skiplock.db")

if TYPE_CHECKING:
    from skiplock.settings import Settings

#: A standalone connection or one borrowed from the pool.
AnyConnection = asyncpg.Connection | PoolConnectionProxy
#: Where a single statement can be sent: the pool (which lends a connection for it) or a connection.
PoolOrConnection = asyncpg.Pool | AnyConnection

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
    asyncpg.IdleInTransactionSessionTimeoutError,  # 25P03: the server ended an idle transaction
)


def is_unavailable(exc: BaseException) -> bool:
    """True when retrying the same statement later may succeed: the database was unreachable, the
    connection broke, or the server refused for a reason of its own. False when the server refused
    the statement for its values (bad data, a constraint, a trigger): retrying the same batch would
    fail forever, so a batched writer splits it to isolate the item instead."""
    if isinstance(exc, (ValueError, TypeError)):
        return False  # the driver could not encode an argument (its DataError is a ValueError too)
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)):  # timeouts: OSError
        return True
    if isinstance(exc, DatabaseError):
        return not isinstance(exc, StatementRefusedError)  # connecting failed, or a statement stopped
    return isinstance(exc, _TRANSIENT_SERVER_ERRORS)


#: Server errors that stopped a statement of a server that is fine: the same statement may pass on
#: a retry. Each with what the caller is told.
_STOPPED_STATEMENTS: tuple[tuple[type[Exception], str], ...] = (
    (
        asyncpg.QueryCanceledError,
        "the statement was cancelled (its time limit, or an operator); retry shortly",
    ),
    (asyncpg.LockNotAvailableError, "the statement waited too long for a lock; retry shortly"),  # 55P03
    (asyncpg.TransactionRollbackError, "the statement conflicted with another transaction; retry shortly"),
    (asyncpg.IdleInTransactionSessionTimeoutError, "the server ended an idle transaction; retry shortly"),
)


def database_error(exc: BaseException) -> DatabaseError:
    """The typed error for what the driver or the socket raised: the database unavailable
    (:class:`DatabaseUnavailableError`), a statement stopped by a limit or a conflict that a retry
    may pass (:class:`StatementStoppedError`), or a statement the server refused for any other
    reason (:class:`StatementRefusedError`: a bug or the schema, not worth a retry). ``extra``
    names the driver's error class and the SQLSTATE, never the server's message (it may quote
    values). Raise it ``from exc``."""
    if isinstance(exc, DatabaseError):
        return exc
    # Cleaning up after a connection the server closed (a transaction's exit, a release) raises the
    # driver's InterfaceError, the server's error as its context: that one says what happened.
    while (
        isinstance(exc, asyncpg.InterfaceError)
        and exc.__context__ is not None
        and is_unavailable(exc.__context__)
    ):
        exc = exc.__context__
    extra: dict[str, Any] = {"error": type(exc).__name__}
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        extra["sqlstate"] = sqlstate
    for kind, message in _STOPPED_STATEMENTS:
        if isinstance(exc, kind):
            return StatementStoppedError(message, **extra)
    if is_unavailable(exc):
        return DatabaseUnavailableError("the database is unavailable; retry shortly", **extra)
    return StatementRefusedError("the database refused the statement", **extra)


_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + json_bytes(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


def encode_json(value: Any) -> str | None:
    """JSON text for a jsonb parameter sent as text (None stays NULL), storable whatever the
    value holds (see :func:`skiplock.db.storable.json_bytes`); never raises."""
    return json_text(value)


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb and json as Python values through orjson, in binary so COPY can carry them too; every
    text, jsonb and json value sent made storable first (NUL and lone surrogates as U+FFFD), so no
    value can fail a statement, or a whole batch, for its characters. (Arrays of text are encoded
    by the driver itself: JSON sent in a text[] goes through :func:`encode_json`.)"""
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "json", encoder=json_bytes, decoder=orjson.loads, schema="pg_catalog", format="binary"
    )
    # bytes.decode is the driver's own decoding, in C; only the encoder adds a check.
    await conn.set_type_codec(
        "text", encoder=text_bytes, decoder=bytes.decode, schema="pg_catalog", format="binary"
    )


#: Seconds past the server's statement limit that the driver waits for an answer: a live server
#: ends a slow statement itself (a clear error); the driver's own limit is for a server that is gone
#: without closing the connection (a half-open connection never answers).
_DRIVER_GRACE_S = 5.0

#: Server-side keepalives: a backend notices within about a minute that its client vanished without
#: closing the connection, and ends, releasing its locks and its snapshot. Unix sockets ignore them.
_KEEPALIVES = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}


@dataclass(frozen=True, slots=True)
class Limits:
    """Time limits of a connection, in seconds; 0 leaves one to the server's own configuration.

    The engine's connections get all of them (from :func:`engine_limits`), set so a healthy system
    never reaches them; a task's and a migration's connections get none that could cut a long
    statement or a COPY short.
    """

    connect_s: float = 10.0
    acquire_s: float = 0.0  # a pool's default wait for a free connection
    statement_s: float = 0.0  # statement_timeout (and the driver's limit, a little later)
    lock_s: float = 0.0  # lock_timeout
    idle_in_transaction_s: float = 0.0  # idle_in_transaction_session_timeout

    @property
    def command_s(self) -> float | None:
        """The driver's limit on one statement (None: no limit)."""
        return self.statement_s + _DRIVER_GRACE_S if self.statement_s > 0 else None

    def server_settings(self, application_name: str, *, pooled: bool = False) -> dict[str, str]:
        """Session settings sent at connect (pg_stat_activity shows ``application_name``).
        ``pooled``: through a transaction pooler, which refuses the others at connect (PgBouncer
        forwards only a few parameters, and a server connection is not this client's session):
        its limits then come from the role's or the database's settings (see the README)."""
        if pooled:
            return {"application_name": application_name}
        settings = {"application_name": application_name, **_KEEPALIVES}
        for name, seconds in (
            ("statement_timeout", self.statement_s),
            ("lock_timeout", self.lock_s),
            ("idle_in_transaction_session_timeout", self.idle_in_transaction_s),
        ):
            if seconds > 0:
                settings[name] = str(max(1, round(seconds * 1000)))
        return settings


def engine_limits(settings: Settings) -> Limits:
    """The limits of the engine's own connections: its pool, the listener, the claim connection.

    Their transactions last a few round trips, and some hold running jobs' rows (events, then
    outcomes): a process stopped inside one (SIGSTOP, a frozen VM) would keep those jobs from every
    rescuer, whose SKIP LOCKED passes them by, however long ago their leases ran out. So the server
    ends such a transaction after a lease at most, whatever SKIPLOCK_DB_IDLE_IN_TRANSACTION_TIMEOUT_S
    says (which still bounds the tasks' own)."""
    idle = settings.db_idle_in_transaction_timeout_s
    return Limits(
        connect_s=settings.db_connect_timeout_s,
        acquire_s=settings.db_acquire_timeout_s,
        statement_s=settings.db_statement_timeout_s,
        lock_s=settings.db_lock_timeout_s,
        idle_in_transaction_s=min(idle, settings.lease_s) if idle > 0 else settings.lease_s,
    )


def task_limits(settings: Settings) -> Limits:
    """The limits of the pool tasks use (``ctx.pool``): a task's own statements and COPYs run as
    long as they need (``SKIPLOCK_TASK_STATEMENT_TIMEOUT_S`` bounds them); only a transaction left
    idle is ended, since it holds back vacuum for every table."""
    return Limits(
        connect_s=settings.db_connect_timeout_s,
        acquire_s=0.0,  # a task waits for a connection as long as its own timeout lets it
        statement_s=settings.task_statement_timeout_s,
        idle_in_transaction_s=settings.db_idle_in_transaction_timeout_s,
    )


def is_broken_connection(exc: BaseException) -> bool:
    """The connection's state is unknown after ``exc`` (it broke mid-statement, the driver lost
    track of its protocol, a statement outlived the driver's limit, the server is shutting down):
    terminate it, never reuse."""
    return isinstance(
        exc,
        (
            OSError,  # TimeoutError included
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            asyncpg.PostgresConnectionError,
            # Class 57: after `pg_ctl restart -m fast` the server's FATAL 57P01 arrives while the
            # driver still thinks a statement runs; resetting that connection on release raised
            # "InternalClientError: cannot switch to state 15; another operation (2) is in
            # progress", which killed the engine before it was counted as a database error.
            asyncpg.OperatorInterventionError,
        ),
    )


class _Acquire(PoolAcquireContext):
    """``async with pool.acquire()``: a connection that broke inside the block is terminated
    before it goes back, so the pool replaces it instead of handing it to the next caller. So is
    one whose statement was cancelled: asyncpg would wait, without a limit, for the server to
    confirm the cancel, and a frozen or half-open server never does (the caller and the pool
    hung; seen with a SIGSTOPped backend). It keeps the pool's count of the connections lent, and
    of the acquires that found none left and waited."""

    __slots__ = ()

    async def __aenter__(self) -> PoolConnectionProxy:
        pool = self.pool
        if not isinstance(pool, Pool):
            return await super().__aenter__()
        if pool.in_use < pool.get_max_size():
            connection = await super().__aenter__()
        else:  # every connection lent: this acquire waits for one to come back
            started = time.perf_counter()
            try:
                connection = await super().__aenter__()
            finally:
                pool.acquire_waits += 1
                pool.acquire_wait_s += time.perf_counter() - started
        pool.in_use += 1
        return connection

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._release(*exc)
        finally:
            if isinstance(self.pool, Pool):
                self.pool.in_use -= 1

    async def _release(self, *exc: object) -> None:
        error = exc[1] if len(exc) > 1 else None
        if (
            isinstance(error, BaseException)
            and self.connection is not None
            and (isinstance(error, asyncio.CancelledError) or is_broken_connection(error))
        ):
            # Closed by the server (a backend terminated), it is let go by the pool already: the
            # block's own error, the one that says what happened, propagates.
            with contextlib.suppress(asyncpg.InterfaceError):
                self.connection.terminate()
        try:
            await super().__aexit__(*exc)
        except DB_UNAVAILABLE_OR_TIMEOUT as release_error:
            # The reset on release failed: asyncpg has terminated the connection. What the block
            # did stands (or its own error propagates), so this one is only logged.
            log.warning("pool_release_failed", error=_text(release_error))


class Pool(asyncpg.Pool):
    """asyncpg's pool with a default acquire timeout, whose broken connections are discarded, and
    which counts the acquires that had to wait for a connection (all in use) and their wait.

    ``pool.fetch()`` and the other shortcuts acquire through :meth:`acquire`, so they get all three.
    """

    __slots__ = ("acquire_timeout_s", "acquire_wait_s", "acquire_waits", "in_use")

    def __init__(self, *args: Any, acquire_timeout_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout_s = acquire_timeout_s
        self.in_use = 0  # connections lent through acquire() (every use of the pool goes through it)
        self.acquire_waits = 0
        self.acquire_wait_s = 0.0

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        return _Acquire(self, timeout if timeout is not None else self.acquire_timeout_s)


#: asyncpg's default: each connection keeps up to this many named prepared statements.
_STATEMENT_CACHE_SIZE = 100


def _statement_cache_size(transaction_pooler: bool) -> int:
    """Through a transaction pooler none: a named prepared statement lives in one server session,
    which the next transaction may not get (PgBouncer before 1.21 does not track them). asyncpg
    then sends every statement unnamed, parsed again with its execution: no Sync between the two
    lets the pooler hand the server connection to another client in the middle."""
    return 0 if transaction_pooler else _STATEMENT_CACHE_SIZE


async def connect(
    dsn: str,
    *,
    limits: Limits | None = None,
    application_name: str = "skiplock",
    transaction_pooler: bool = False,
) -> asyncpg.Connection:
    """One standalone connection with skiplock's codecs (the listener, claims and migrations use
    it). Without ``limits`` only connecting is bounded: a migration may wait and run as long as it
    needs. ``transaction_pooler``: ``dsn`` is a pooler in transaction mode (no named prepared
    statements, no session settings sent; see :meth:`Limits.server_settings`)."""
    limits = limits or Limits()
    try:
        conn = await asyncpg.connect(
            dsn,
            connection_class=Connection,
            timeout=limits.connect_s,
            command_timeout=limits.command_s,
            statement_cache_size=_statement_cache_size(transaction_pooler),
            server_settings=limits.server_settings(application_name, pooled=transaction_pooler),
        )
    except DB_UNAVAILABLE as exc:
        raise DatabaseError(f"cannot connect to the database: {_text(exc)}") from exc
    try:
        await init_connection(conn)
    except DB_UNAVAILABLE as exc:
        conn.terminate()
        raise DatabaseError(f"cannot set up the connection: {_text(exc)}") from exc
    return conn


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    limits: Limits | None = None,
    application_name: str = "skiplock",
    reset_sessions: bool = True,
    transaction_pooler: bool = False,
) -> Pool:
    """A pool whose connections all carry skiplock's codecs and ``limits``.

    ``reset_sessions=False`` for a pool only skiplock's own statements use, none of which leaves
    session state behind: a released connection is then not sent asyncpg's reset query (advisory
    unlocks, CLOSE ALL, UNLISTEN *, RESET ALL), a round trip per use. An open transaction is still
    rolled back, and listeners are still removed.

    ``transaction_pooler``: ``dsn`` is a pooler in transaction mode (see :func:`connect`); no
    reset is sent either, since the server session it would reset is not this connection's.
    """
    limits = limits or Limits()
    reset_sessions = reset_sessions and not transaction_pooler
    pool = Pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=Connection,
        record_class=asyncpg.Record,
        init=init_connection,
        reset=None if reset_sessions else _keep_session,
        acquire_timeout_s=limits.acquire_s or None,
        timeout=limits.connect_s,
        command_timeout=limits.command_s,
        statement_cache_size=_statement_cache_size(transaction_pooler),
        server_settings=limits.server_settings(application_name, pooled=transaction_pooler),
    )
    try:
        await pool
    except DB_UNAVAILABLE as exc:
        pool.terminate()
        raise DatabaseError(f"cannot connect to the database: {_text(exc)}") from exc
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset beyond asyncpg's own rollback: nothing (see ``create_pool``)."""


@dataclass(frozen=True, slots=True)
class PoolStatements:
    session_settings: Statement


SQL = load_statements(PoolStatements, "skiplock.db.sql", "pool.sql")


async def warn_of_unset_limits(pool: asyncpg.Pool, limits: Limits) -> list[str]:
    """Through a transaction pooler the engine's time limits cannot be sent at connect: log (and
    return) those the server's own settings leave off. Set them on the role or the database
    (``ALTER ROLE skiplock SET statement_timeout = '30s'``, ...); the driver's own limit on each
    statement still applies."""
    wanted = {
        name: value
        for name, value in limits.server_settings("").items()
        if name.endswith("_timeout") and value != "0"
    }
    rows = await pool.fetch(SQL.session_settings, sorted(wanted))
    unset = [r["name"] for r in rows if r["setting"] == "0"]
    if unset:
        log.warning(
            "pooler_limits_unset",
            settings={name: f"{wanted[name]}ms" for name in unset},
            hint="a transaction pooler passes no session settings: set these on the role or the database",
        )
    return unset


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__  # a TimeoutError has no text


async def close_quietly(conn: asyncpg.Connection, wait_s: float = 2.0) -> None:
    """Close politely if the server answers in time, else drop the socket."""
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), timeout=wait_s)
    except Exception:  # whatever a broken connection raises, it is dropped and the caller goes on
        conn.terminate()
