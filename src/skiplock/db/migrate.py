"""Apply ``migrations/NNNN_name.sql`` in order, each in its own transaction, under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg
import structlog

from skiplock.db.pool import AnyConnection, close_quietly, connect
from skiplock.db.sqlfile import Statement, load_statements
from skiplock.errors import MigrationError

log = structlog.get_logger("skiplock.migrate")

_FILENAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class MigrateStatements:
    lock: Statement
    unlock: Statement
    create_table: Statement
    applied: Statement
    record: Statement


SQL = load_statements(MigrateStatements, "skiplock.db.sql", "migrate.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    """The packaged migrations in a wheel, else the repository's ``migrations/``."""
    packaged = Path(str(resources.files("skiplock"))) / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "migrations"


def discover(directory: Path | None = None) -> list[Migration]:
    """Every migration file, ordered; gaps and duplicate numbers are errors."""
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must be NNNN_name.sql: {path.name}")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} is missing or duplicated")
    return found


async def migrate(conn: AnyConnection) -> list[int]:
    """Apply pending migrations; returns the versions applied. Safe to run from many processes at once."""
    applied_now: list[int] = []
    await conn.execute(SQL.lock)
    try:
        await conn.execute(SQL.create_table)
        done = {row["version"] for row in await conn.fetch(SQL.applied)}
        for migration in discover():
            if migration.version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(SQL.record, migration.version, migration.name)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            applied_now.append(migration.version)
            log.info("migration_applied", version=migration.version, name=migration.name)
    finally:
        await conn.execute(SQL.unlock)
    return applied_now


async def migrate_database(dsn: str) -> list[int]:
    """Connect, apply pending migrations, disconnect; returns the versions applied."""
    conn = await connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await close_quietly(conn)


async def is_current(conn: AnyConnection) -> bool:
    """True when every migration file of this release has been applied (a database a newer
    release migrated further is current for this one too: see :func:`missing`)."""
    return not await missing(conn)


async def missing(conn: AnyConnection) -> list[int]:
    """Versions of this release's migrations the database has not applied (empty also when the
    database is ahead: a newer release's replica migrated it, and kept what this one runs on)."""
    try:
        done = {row["version"] for row in await conn.fetch(SQL.applied)}
    except asyncpg.UndefinedTableError:
        done = set()
    return [m.version for m in discover() if m.version not in done]
