"""The SQL of fetch_api and scrape, loaded from ``sql/*.sql`` into typed constants."""

from __future__ import annotations

from dataclasses import dataclass

from skiplock.db.sqlfile import Statement, load_statements


@dataclass(frozen=True, slots=True)
class RecordStatements:
    records_stage: Statement
    records_upsert_staged: Statement
    records_page: Statement


@dataclass(frozen=True, slots=True)
class PageStatements:
    page_upsert: Statement
    page_get: Statement


RECORDS = load_statements(RecordStatements, "skiplock.tasks.sql", "records.sql")
PAGES = load_statements(PageStatements, "skiplock.tasks.sql", "pages.sql")
