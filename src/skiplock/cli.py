"""``skiplock serve | worker | migrate | keys | jobs | queues | db-url`` — the one entry point of a
process."""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import structlog

from skiplock._jobs_cli import add_commands as add_jobs_commands
from skiplock._jobs_cli import run as run_jobs_command
from skiplock._version import __version__
from skiplock.errors import SkiplockError
from skiplock.logging import configure_logging
from skiplock.settings import Settings
from skiplock.shutdown import ShutdownSignals, exit_now

if TYPE_CHECKING:
    from skiplock.auth import KeyStore
    from skiplock.queue.engine import Engine

log = structlog.get_logger("skiplock.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skiplock", description="Jobs on PostgreSQL alone.")
    parser.add_argument("--version", action="version", version=f"skiplock {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def worker_flags(command: argparse.ArgumentParser) -> None:
        command.add_argument("--concurrency", type=int, help="jobs run at once (SKIPLOCK_CONCURRENCY)")
        command.add_argument("--queues", help="queues served, 'a,b:2' (SKIPLOCK_QUEUES)")

    serve = commands.add_parser("serve", help="HTTP API + workers + housekeeping in one process")
    serve.add_argument("--host", help="bind address (SKIPLOCK_HOST)")
    serve.add_argument("--port", type=int, help="bind port (SKIPLOCK_PORT)")
    serve.add_argument("--no-worker", action="store_true", help="serve the API only, run no jobs")
    serve.add_argument("--no-scheduler", action="store_true", help="do not fire schedules here")
    worker_flags(serve)
    worker_flags(commands.add_parser("worker", help="workers and housekeeping, no HTTP"))
    commands.add_parser("migrate", help="apply pending migrations and exit")
    keys = commands.add_parser("keys", help="API keys: create, list, revoke").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key and print it (once: only its hash is kept)")
    create.add_argument("--name", required=True, help="what the key is for, unique")
    create.add_argument("--scopes", required=True, help="jobs:read, jobs:write, schedules:write, admin")
    keys.add_parser("list", help="every key: name, prefix, scopes, last use, revoked")
    revoke = keys.add_parser("revoke", help="revoke a key by name or prefix")
    revoke.add_argument("key", help="the key's name or prefix")
    commands.add_parser(
        "db-url", help="print the database URL serve would use (DATABASE_URL, else the embedded server's)"
    )
    add_jobs_commands(commands)  # jobs enqueue|list|show|cancel|retry, queues list|pause|resume
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "concurrency": getattr(args, "concurrency", None),
        "queues": getattr(args, "queues", None),
        "worker": False if getattr(args, "no_worker", False) else None,
        "scheduler": False if getattr(args, "no_scheduler", False) else None,
    }
    return {key: value for key, value in flags.items() if value is not None}


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database, or an embedded server under data_dir/pg for the process's life."""
    if settings.database_url:
        yield settings.database_url
        return
    from skiplock.db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(settings.data_dir / "pg")
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()


@asynccontextmanager
async def _key_store(settings: Settings, *, migrate: bool) -> AsyncIterator[KeyStore]:
    """The API keys on a one-connection pool, for commands that need nothing else."""
    from skiplock.auth import KeyStore
    from skiplock.db.migrate import migrate_database
    from skiplock.db.pool import create_pool

    dsn = settings.database_url or ""
    if migrate:
        await migrate_database(settings.direct_database_url(dsn))
    pool = await create_pool(dsn, min_size=1, max_size=1, transaction_pooler=settings.transaction_pooler)
    try:
        yield KeyStore(pool)
    finally:
        await pool.close()


async def _check_auth(settings: Settings) -> None:
    """Refuse to serve a non-loopback address without keys (unless SKIPLOCK_AUTH=off), in one line
    before anything listens; the app repeats the decision at start."""
    from skiplock.auth import decide_for

    async with _key_store(settings, migrate=settings.auto_migrate) as keys:
        await decide_for(settings, keys)


async def _serve(settings: Settings) -> int:
    import uvicorn

    from skiplock.api import SkiplockPlugin
    from skiplock.api.serving import OneWriteHttpToolsProtocol
    from skiplock.app import create_app

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # ShutdownSignals handles them: the engine must hear the first one at once

    await _check_auth(settings)
    app = create_app(settings)
    engine = app.plugins.get(SkiplockPlugin).engine
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=OneWriteHttpToolsProtocol,  # httptools, each small answer in one write
        # Events are small JSON frames: compressing each for every browser that offers it cost
        # about a sixth of the server's CPU in a 500-subscriber fan-out.
        ws_per_message_deflate=False,
        # Open requests get the grace period too; the engine drains meanwhile, from the signal on.
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_s)),
    )
    server = Server(config)
    signals = ShutdownSignals(settings.shutdown_grace_s)
    with signals.installed():
        serving = asyncio.ensure_future(server.serve())
        _freeze_startup_objects()
        failed = await _until_stopped(signals, engine, serving)
        server.should_exit = True
        await serving
    return 1 if failed or not server.started else 0


def _freeze_startup_objects() -> None:
    """Modules, settings and the engine live as long as the process: kept out of the garbage
    collector's scans from now on, which each job's short-lived objects would otherwise trigger
    over all of them (about 2 us of a no-op job's worker CPU)."""
    gc.collect()
    gc.freeze()


async def _until_stopped(
    signals: ShutdownSignals, engine: Engine, serving: asyncio.Future[Any] | None = None
) -> bool:
    """Wait for a signal, a dead engine service or the server's own end; True if the engine died
    (the process then exits non-zero, so an orchestrator restarts it and the rescuer recovers)."""
    requested = asyncio.ensure_future(signals.requested.wait())
    failed = asyncio.ensure_future(engine.wait_failed())
    remote = asyncio.ensure_future(engine.stop_requested.wait())  # POST /workers/{id}/stop
    try:
        waits = {requested, failed, remote} | ({serving} if serving is not None else set())
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        requested.cancel()
        failed.cancel()
        remote.cancel()
    if engine.stop_requested.is_set():
        signals.request("stop requested through the API")
    if engine.failures and not signals.requested.is_set():
        log.error("engine_failed", services=engine.failures)
        return True
    await engine.quiesce()  # no schedule fires and no job is claimed from now on
    return False


async def _worker(settings: Settings) -> int:
    from skiplock import tracing
    from skiplock.queue.engine import Engine
    from skiplock.tasks import load_registry

    tracing.configure(settings)
    signals = ShutdownSignals(settings.shutdown_grace_s)
    with signals.installed():
        registry = load_registry(settings.task_modules)
        async with Engine(settings, registry, settings.database_url or "", role="worker") as engine:
            _freeze_startup_objects()
            failed = await _until_stopped(signals, engine)  # a worker has no server
    return 1 if failed else 0


async def _migrate(settings: Settings) -> int:
    from skiplock.db.migrate import migrate_database

    applied = await migrate_database(settings.direct_database_url(settings.database_url or ""))
    log.info("migrations_current", applied=applied)
    return 0


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from skiplock.auth import parse_scopes

    async with _key_store(settings, migrate=True) as store:
        if args.keys_command == "create":
            key, secret = await store.create(args.name, parse_scopes(args.scopes))
            print(secret)
            print(
                f"created {key.name!r} ({key.prefix}…) with {', '.join(key.scopes)}; the key is shown once",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            for key in await store.all():
                state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "live"
                used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
                print(f"{key.name}\t{key.prefix}\t{','.join(key.scopes)}\tlast used {used}\t{state}")
        else:
            key = await store.revoke(args.key)
            print(f"revoked {key.name!r} ({key.prefix}…)", file=sys.stderr)
    return 0


COMMANDS: dict[str, Callable[..., Any]] = {
    "serve": _serve,
    "worker": _worker,
    "migrate": _migrate,
    "keys": _keys,
    "jobs": run_jobs_command,
    "queues": run_jobs_command,
}
#: The commands that are given their arguments too.
_WITH_ARGS = {"keys", "jobs", "queues"}


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (it is a dependency on Linux and macOS): a faster loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # uvicorn re-raises the signal it caught after its own shutdown; exiting through
    # SystemExit runs our cleanup (the embedded server's stop) instead of dying on the spot.
    raise SystemExit(128 + signum)


def _db_url(settings: Settings) -> int:
    """Print the URL; the embedded server's is known without starting it (and said when it is not
    running: ``make run`` or ``skiplock serve`` starts it)."""
    if settings.database_url:
        print(settings.database_url)
        return 0
    from skiplock.db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(settings.data_dir / "pg")
    print(server.dsn())
    if not server.running:
        print(
            f"skiplock: the embedded server under {server.data_dir} is not running:"
            " `make run` (or `skiplock serve`) in this directory starts it",
            file=sys.stderr,
        )
    return 0


def _import_from_working_directory() -> None:
    """Task modules (SKIPLOCK_TASK_MODULES) resolve from the working directory, as for ``python -m``
    and celery: ``myapp.jobs`` beside the shell's prompt works without PYTHONPATH. Appended, so a
    file there never shadows an installed module."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _import_from_working_directory()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        settings = Settings.load(**_overrides(args))
        if args.command == "db-url":
            return _db_url(settings)  # never starts a server, logs nothing
        configure_logging(settings.log_level, settings.log_format)
        with database(settings) as dsn:
            settings = settings.model_copy(update={"database_url": dsn})
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    command = COMMANDS[args.command]
                    call = command(settings, args) if args.command in _WITH_ARGS else command(settings)
                    code = int(runner.run(call))
            finally:
                signal.signal(signal.SIGTERM, _exit_on_sigterm)  # closing the loop reset it
        from skiplock.queue.engine import busy_task_threads

        if busy_task_threads():
            # Their jobs were handed back; the interpreter would join their threads (a def task
            # cannot be interrupted), so the exit would wait for them: leave without joining.
            log.warning("exiting_with_task_threads_running", threads=busy_task_threads())
            exit_now(code)
        return code
    except SkiplockError as exc:
        print(f"skiplock: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
