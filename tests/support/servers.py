"""Which PostgreSQL the suite runs on: SKIPLOCK_TEST_DATABASE_URL, else a testcontainers server when
a Docker engine answers, else an embedded server in a temporary directory."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from skiplock.testing import embedded_server


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
        yield dsn, "embedded"
