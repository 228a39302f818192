"""Fault injection for the tests: a PostgreSQL of the test's own (to stop, restart or crash),
terminated backends, paused processes, a starved pool, a refusing or a slow TCP path to the
server. Add what a new case needs here, so the next costs little."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from skiplock.db import connect
from skiplock.db.admin import create_database, with_database
from skiplock.db.embedded import EmbeddedPostgres
from skiplock.db.migrate import migrate_database
from tests.support.servers import data_root

#: Like the suite's server (fsync off: the tests never crash the machine itself), but commits wait
#: for the WAL write, so a server crash keeps exactly what was acknowledged, as in production.
DURABLE_SETTINGS = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "on"}


class PrivateServer:
    """A PostgreSQL server of one test's own: it may be stopped, restarted or crashed at will."""

    def __init__(self, directory: Path, settings: dict[str, str]) -> None:
        self.directory = directory
        self.server = EmbeddedPostgres(directory / "pg", settings=settings)
        self.admin_dsn = ""
        self.dsn = ""  # the migrated database the test uses

    def start(self) -> None:
        self.admin_dsn = self.server.start()

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>``: fast (clients cut off) or immediate (a crash, no checkpoint)."""
        self.server.stop() if mode == "fast" else self._pg_ctl("stop", "-m", mode)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut; the server is back when this returns."""
        self._pg_ctl("restart", "-m", "fast")

    def crash(self, sig: int = signal.SIGQUIT) -> None:
        """Kill the postmaster as a crash would (SIGQUIT: immediate, no checkpoint), then start it:
        recovery replays the WAL, so only what was acknowledged durably is there afterwards."""
        pid = self.postmaster_pid()
        assert pid is not None, "the server is not running"
        os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while self.postmaster_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        (self.server.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self.server.stop()  # forget ownership; it is not running
        self.start()

    def promote(self) -> None:
        """``pg_ctl promote``: a standby ends recovery and takes writes; back when it does."""
        self._pg_ctl("promote")

    def postmaster_pid(self) -> int | None:
        return self.server._running_pid()

    def _pg_ctl(self, *args: str) -> None:
        from skiplock.db.embedded import _bin

        options = " ".join(f"-c {key}={value}" for key, value in self.server.settings.items())
        log = str(self.server.data_dir / "server.log")  # without it the server would hold our pipe
        extra = ["-l", log, "-o", f"-k {self.server.socket_dir} {options}"] if args[0] == "restart" else []
        self.server._run([_bin("pg_ctl"), "-D", str(self.server.data_dir), "-w", "-t", "60", *extra, *args])


@asynccontextmanager
async def private_postgres(
    settings: dict[str, str] | None = None, *, test_tables: str = ""
) -> AsyncIterator[PrivateServer]:
    """A fresh server with a migrated database ``skiplock`` (plus ``test_tables``), removed after."""
    directory = Path(tempfile.mkdtemp(prefix="skpf-", dir=data_root()))
    server = PrivateServer(directory, {**DURABLE_SETTINGS, **(settings or {})})
    server.start()
    try:
        server.dsn = await create_database(server.admin_dsn, "skiplock")
        await migrate_database(server.dsn)
        if test_tables:
            conn = await connect(server.dsn)
            try:
                await conn.execute(test_tables)
            finally:
                await conn.close()
        yield server
    finally:
        if server.postmaster_pid() is not None:
            server._pg_ctl("stop", "-m", "immediate")
        server.server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def terminate_backends(admin_dsn: str, database: str, *, application_name: str | None = None) -> int:
    """``pg_terminate_backend`` every other session on ``database`` (of one application if given)."""
    conn = await asyncpg.connect(with_database(admin_dsn, "postgres"))
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()"
            " AND ($2::text IS NULL OR application_name = $2)",
            database,
            application_name,
        )
    finally:
        await conn.close()
    return len(rows)


def pause(process: subprocess.Popen[bytes]) -> None:
    """SIGSTOP: the process stops dead (as under a long GC pause or a frozen VM), sockets open."""
    os.kill(process.pid, signal.SIGSTOP)


def resume(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGCONT)


async def backend_pids(admin_dsn: str, database: str, *, application_name: str | None = None) -> list[int]:
    """The server pids of the sessions on ``database`` (of one application if given)."""
    conn = await asyncpg.connect(with_database(admin_dsn, "postgres"))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend' AND ($2::text IS NULL OR application_name = $2)",
            database,
            application_name,
        )
    finally:
        await conn.close()
    return [row["pid"] for row in rows]


@contextmanager
def frozen_backends(pids: list[int]) -> Iterator[None]:
    """SIGSTOP these server backends for the block: the server stops answering on their
    connections without closing them, as over a half-open connection; SIGCONT after."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def refused_dsn() -> str:
    """A DSN whose TCP port refuses connections (nothing listens there), as a proxy or a firewall
    refusing one process while the database is up for every other."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://skiplock@127.0.0.1:{port}/skiplock"


@asynccontextmanager
async def starved(pool: asyncpg.Pool) -> AsyncIterator[list[asyncpg.pool.PoolConnectionProxy]]:
    """Every connection of ``pool`` taken and held for the block, as by tasks that each hold one:
    whatever acquires from it meanwhile waits (or times out). Connections in use are waited for."""
    held: list[asyncpg.pool.PoolConnectionProxy] = []
    try:
        for _ in range(pool.get_max_size()):
            held.append(await pool.acquire())
        yield held
    finally:
        for conn in held:
            await pool.release(conn)


@asynccontextmanager
async def streaming_replica(primary: PrivateServer) -> AsyncIterator[PrivateServer]:
    """A hot standby of ``primary`` streaming from it (``pg_basebackup -R``, its own socket
    directory), started; ``dsn`` is its copy of the ``skiplock`` database. Stopped and removed after."""
    from skiplock.db.embedded import _bin

    standby = PrivateServer(primary.directory / "standby", dict(primary.server.settings))
    data = standby.server.data_dir
    data.mkdir(mode=0o700, parents=True)
    owner = standby.server._pick_user()  # as root the server's own user, who must own the copy
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    source = ["-h", str(primary.server.socket_dir), "-U", "postgres"]
    primary.server._run([_bin("pg_basebackup"), "-D", str(data), "-R", "-X", "stream", "-c", "fast", *source])
    for copied in data.glob(".s.PGSQL.*"):  # the primary's socket lock, its socket being in its data dir
        copied.unlink()
    try:
        standby.start()
        standby.dsn = with_database(standby.admin_dsn, "skiplock")
        yield standby
    finally:
        if standby.postmaster_pid() is not None:
            standby._pg_ctl("stop", "-m", "immediate")
        standby.server.stop()


async def replicate_synchronously(primary: PrivateServer, standby: PrivateServer) -> None:
    """From now on the primary's commits wait until ``standby`` has flushed them
    (``synchronous_standby_names = '*'``, with ``synchronous_commit = on``): an acknowledged commit
    is on the standby. Set on the primary only (ALTER SYSTEM, after the base backup), so the
    standby, once promoted, waits for no standby of its own. Returns once the standby is sync."""
    conn = await asyncpg.connect(primary.admin_dsn)
    try:
        await conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await conn.execute("SELECT pg_reload_conf()")
        for _ in range(300):
            if await conn.fetchval("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the standby did not become synchronous within 15 s")
    finally:
        await conn.close()


class SlowProxy:
    """A TCP proxy in front of a PostgreSQL server that delays everything a client sends by
    ``delay_s`` (so every round trip takes that much longer; what the server sends back is not
    held), and can stop forwarding altogether (:meth:`freeze`: the server as a dead host, no
    reply and no reset). ``dsn`` reaches the server through it."""

    def __init__(self, upstream: str, delay_s: float) -> None:
        self.delay_s = delay_s
        self.dsn = ""
        self._upstream = upstream
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    def freeze(self) -> None:
        """Nothing more is forwarded either way (connections stay open; new ones get no answer)."""
        self._flowing.clear()

    def repoint(self, upstream: str) -> None:
        """The address moves (a failover): new connections reach ``upstream``'s server, and every
        connection made before is cut, as the old host's would be."""
        self._upstream = upstream
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def start(self) -> None:
        url = urlsplit(self._upstream)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        credentials = url.netloc.rpartition("@")[0]
        self.dsn = f"postgresql://{credentials}@127.0.0.1:{port}{url.path}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        url = urlsplit(self._upstream)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        port = int(query.get("port") or url.port or 5432)
        host = query.get("host") or url.hostname or "127.0.0.1"
        if host.startswith("/"):  # a Unix socket directory
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            up_reader, up_writer = await self._connect_upstream()
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        for task in (
            self._pump(reader, up_writer, delayed=True),
            self._pump(up_reader, writer, delayed=False),
        ):
            spawned = asyncio.create_task(task)
            self._tasks.add(spawned)
            spawned.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._flowing.wait()
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        self._tasks.add(sender)
        sender.add_done_callback(self._tasks.discard)
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                chunks.put_nowait((loop.time() + (self.delay_s if delayed else 0.0), data))
            chunks.put_nowait((loop.time(), b""))
            await sender
        except (OSError, asyncio.IncompleteReadError):
            writer.close()
        finally:
            sender.cancel()


@asynccontextmanager
async def slow_proxy(dsn: str, delay_s: float = 0.0) -> AsyncIterator[SlowProxy]:
    """A :class:`SlowProxy` in front of ``dsn``'s server (its Unix socket or TCP port); every
    connection through it is cut when the block ends. ``delay_s`` may be changed meanwhile."""
    proxy = SlowProxy(dsn, delay_s)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
