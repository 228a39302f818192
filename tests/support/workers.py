"""skiplock as real subprocesses: workers for crash, concurrency and cancel tests (killed for real),
and a whole server for the browser tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_worker(dsn: str, **settings: str) -> subprocess.Popen[bytes]:
    """``skiplock worker`` on ``dsn`` with the test tasks loaded."""
    return spawn(dsn, "worker", stderr_to=None, **settings)


def spawn(dsn: str, *command: str, stderr_to: Path | None = None, **settings: str) -> subprocess.Popen[bytes]:
    """``skiplock <command…>`` on ``dsn`` with the test tasks loaded and ``SKIPLOCK_<key>`` settings
    (its log lines to ``stderr_to`` when given, else to the test's stderr)."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        # This checkout's sources first: the installed package may be another checkout's.
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "SKIPLOCK_TASK_MODULES": "tests.support.tasks",
        "SKIPLOCK_LOG_FORMAT": "json",
        "SKIPLOCK_LOG_LEVEL": "warning",
        "SKIPLOCK_POLL_INTERVAL_S": "0.5",
        "SKIPLOCK_AUTO_MIGRATE": "false",
        # As make_settings's in-process engines: a stop with jobs still running waits 1 s for them,
        # not the production 10 s (a test of the grace sets its own).
        "SKIPLOCK_SHUTDOWN_GRACE_S": "1",
        **{f"SKIPLOCK_{key.upper()}": value for key, value in settings.items()},
    }
    env.pop("SKIPLOCK_TEST_DATABASE_URL", None)
    stderr = stderr_to.open("ab") if stderr_to is not None else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "skiplock", *command], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    finally:
        if stderr is not None:
            stderr.close()  # the child has its own copy


def stop_worker(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout=timeout)
