"""Which PostgreSQL the suite runs on: SKIPLOCK_TEST_DATABASE_URL, else a testcontainers server when
a Docker engine answers, else an embedded server in a temporary directory (in RAM when it can be)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skiplock.db.embedded import EmbeddedPostgres
from skiplock.testing import FAST_SETTINGS

#: A RAM filesystem for the test servers' data, used when it has this much room. fsync is off
#: either way, but on a disk the kernel still writes back every database the suite makes and drops
#: (one per test): CREATE DATABASE from the template took 0.04-0.2 s on /tmp, 0.015 s on /dev/shm.
RAM_DIR = "/dev/shm"
RAM_ROOM = 4 << 30


def data_root() -> str:
    """Where a test's PostgreSQL keeps its data: RAM_DIR when it is there with room, else /tmp
    (a short path either way: a socket path has a limit)."""
    try:
        stat = os.statvfs(RAM_DIR)
    except OSError:
        return "/tmp"
    if stat.f_bavail * stat.f_frsize >= RAM_ROOM and os.access(RAM_DIR, os.W_OK | os.X_OK):
        return RAM_DIR
    return "/tmp"


def docker_available() -> bool:
    """True when a Docker engine answers a ping on its socket (a client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


@contextmanager
def embedded_server() -> Iterator[str]:
    """As skiplock.testing's embedded_server (its FAST_SETTINGS), its data under data_root()."""
    directory = Path(tempfile.mkdtemp(prefix="skpg-", dir=data_root()))
    server = EmbeddedPostgres(directory / "pg", settings=FAST_SETTINGS)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[tuple[str, str]]:
    """Yield (admin DSN, kind)."""
    given = os.environ.get("SKIPLOCK_TEST_DATABASE_URL")
    if given:
        yield given, "SKIPLOCK_TEST_DATABASE_URL"
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18-alpine", driver=None) as container:
            yield container.get_connection_url(), "testcontainers"
        return
    with embedded_server() as dsn:
        yield dsn, f"embedded (data in {data_root()})"
