"""CSV imports: storing uploads, parsing them, and reading the outcome (the task is tasks/import_csv)."""

from __future__ import annotations

from skiplock.imports.models import FailedRow, FailedRowPage, ImportCreated, ImportInfo, ImportPage
from skiplock.imports.reads import failed_rows, get_import, list_imports
from skiplock.imports.upload import store_upload

__all__ = [
    "FailedRow",
    "FailedRowPage",
    "ImportCreated",
    "ImportInfo",
    "ImportPage",
    "failed_rows",
    "get_import",
    "list_imports",
    "store_upload",
]
