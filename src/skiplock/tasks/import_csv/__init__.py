"""CSV imports, in one package: the upload stored (``upload``), the ``import_csv`` task that loads
it into ``items`` (``task``, with ``rows`` for the CSV side), and reading the outcome (``reads``,
``models``). Its tables and SQL (``sql/imports.sql``) are its own; the API mounts the HTTP routes."""

from __future__ import annotations

from skiplock.tasks.import_csv.models import FailedRow, FailedRowPage, ImportCreated, ImportInfo, ImportPage
from skiplock.tasks.import_csv.reads import failed_rows, get_import, list_imports
from skiplock.tasks.import_csv.task import ImportArgs, import_csv
from skiplock.tasks.import_csv.upload import store_upload

__all__ = [
    "FailedRow",
    "FailedRowPage",
    "ImportArgs",
    "ImportCreated",
    "ImportInfo",
    "ImportPage",
    "failed_rows",
    "get_import",
    "import_csv",
    "list_imports",
    "store_upload",
]
