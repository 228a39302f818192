"""PgBouncer (Debian's ``pgbouncer`` package) in transaction mode in front of the test server."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

#: Where Debian puts it (/usr/sbin is not on every user's PATH).
_CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer")
#: PgBouncer refuses to run as root: the first of these users that exists runs it.
_USERS = ("skiplock_pg", "postgres", "nobody")


def pgbouncer_binary() -> str | None:
    for candidate in _CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_of(dsn: str) -> dict[str, str]:
    """host, port, user and password of a libpq URL (a Unix socket directory as ``?host=``)."""
    url = urlsplit(dsn)
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    server = {
        "host": query.get("host") or url.hostname or "127.0.0.1",
        "port": query.get("port") or str(url.port or 5432),
        "user": unquote(url.username or "postgres"),
    }
    if url.password:
        server["password"] = unquote(url.password)
    return server


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    for user in _USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["-u", user]
    raise RuntimeError("pgbouncer will not run as root and no other user exists")


@contextmanager
def pgbouncer(dsn: str, *, pool_size: int = 4, idle_transaction_timeout_s: int = 30) -> Iterator[str]:
    """PgBouncer in transaction mode, at most ``pool_size`` server connections per database, in
    front of ``dsn``'s server; yields ``dsn`` through it. Its log goes to ``pgbouncer.log`` in its
    directory, printed if it does not start."""
    binary = pgbouncer_binary()
    assert binary is not None, "pgbouncer is not installed (apt-get install pgbouncer)"
    server = _server_of(dsn)
    directory = Path(tempfile.mkdtemp(prefix="skpb-", dir="/tmp"))
    directory.chmod(0o755)  # readable by the user it drops to
    port = _free_port()
    users = directory / "users.txt"
    users.write_text(f'"{server["user"]}" ""\n')
    target = " ".join(f"{key}={value}" for key, value in server.items())
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = {target}\n"  # any database name, on the test server
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {users}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nreserve_pool_size = 0\n"
        "max_client_conn = 1000\n"
        # What the engine's idle-in-transaction limit does when it cannot be sent at connect.
        f"idle_transaction_timeout = {idle_transaction_timeout_s}\n"
        "server_login_retry = 1\n"
    )
    for path in (users, config):
        path.chmod(0o644)
    log_path = directory / "pgbouncer.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, *_run_as(), str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_listening(port, process, log_path)
        database = urlsplit(dsn).path
        yield f"postgresql://{server['user']}@127.0.0.1:{port}{database}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {log_path.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen in 10 s: {log_path.read_text(errors='replace')}")
