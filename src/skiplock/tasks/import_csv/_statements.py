"""The CSV import's SQL, loaded from ``sql/imports.sql`` into typed constants."""

from __future__ import annotations

from dataclasses import dataclass

from skiplock.db.sqlfile import load_statements


@dataclass(frozen=True, slots=True)
class ImportStatements:
    import_insert: str
    import_set_job: str
    import_list: str
    import_exists: str
    import_failed_rows: str
    import_run_state: str
    import_begin_run: str
    import_chunk_batch: str
    import_staging_create: str
    import_staging_drop: str
    import_batch_settings: str
    import_load_batch: str
    import_finish: str


IMPORTS = load_statements(ImportStatements, "skiplock.tasks.import_csv.sql", "imports.sql")
