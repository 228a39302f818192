"""The CSV import's SQL, loaded from ``sql/imports.sql`` into typed constants."""

from __future__ import annotations

from dataclasses import dataclass

from skiplock.db.sqlfile import Statement, load_statements


@dataclass(frozen=True, slots=True)
class ImportStatements:
    import_insert: Statement
    import_set_job: Statement
    import_list: Statement
    import_exists: Statement
    import_failed_rows: Statement
    import_run_state: Statement
    import_begin_run: Statement
    import_chunk_batch: Statement
    import_staging_create: Statement
    import_staging_drop: Statement
    import_batch_settings: Statement
    import_load_batch: Statement
    import_finish: Statement


IMPORTS = load_statements(ImportStatements, "skiplock.tasks.import_csv.sql", "imports.sql")
