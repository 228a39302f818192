"""skiplock processes the benchmark starts: real `skiplock worker` / `serve`, default settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from bench.runner import ROOT


def env_for(dsn: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPLOCK_")}
    env.update(
        DATABASE_URL=dsn,
        # This checkout's sources first: the venv's editable install points at another checkout.
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        SKIPLOCK_TASK_MODULES="bench.tasks",
        SKIPLOCK_AUTO_MIGRATE="false",
        SKIPLOCK_RATE_LIMIT="off",  # one client address sends it all: measure the service, not the limiter
        **{f"SKIPLOCK_{k.upper()}": v for k, v in settings.items()},
    )
    return env


@contextmanager
def skiplock(
    dsn: str, *args: str, count: int = 1, **settings: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run ``skiplock <args>`` ``count`` times; SIGTERM and wait on the way out."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "skiplock", *args],
            env=env_for(dsn, **settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
