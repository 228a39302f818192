"""Create and drop whole databases (a migrated template, then a copy per test or workload)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from skiplock.db.migrate import migrate_database
from skiplock.db.pool import close_quietly
from skiplock.db.sqlfile import Statement, load_statements

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class AdminStatements:
    drop_database: Statement
    create_database: Statement
    create_database_from: Statement


SQL = load_statements(AdminStatements, "skiplock.db.sql", "admin.sql")


def with_database(dsn: str, database: str) -> str:
    """The same server, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def _checked(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


async def create_database(admin_dsn: str, name: str, *, template: str | None = None) -> str:
    """(Re)create database ``name``, empty or copied from ``template``; returns its DSN."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(SQL.drop_database.format(name=_checked(name)))
        if template is None:
            await admin.execute(SQL.create_database.format(name=name))
        else:
            await admin.execute(SQL.create_database_from.format(name=name, template=_checked(template)))
    finally:
        await close_quietly(admin)
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(SQL.drop_database.format(name=_checked(name)))
    finally:
        await close_quietly(admin)


async def create_migrated_template(admin_dsn: str, name: str) -> str:
    """A freshly migrated database to copy from; returns its DSN."""
    dsn = await create_database(admin_dsn, name)
    await migrate_database(dsn)
    return dsn
