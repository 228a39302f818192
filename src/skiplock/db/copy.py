"""Every COPY in one place: bulk loads with an explicit column list."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from skiplock.db.pool import AnyConnection


async def copy_rows(
    conn: AnyConnection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """COPY ``rows`` into ``table`` (binary, through the connection's codecs); returns the count."""
    status = await conn.copy_records_to_table(table, columns=list(columns), records=rows)
    return int(status.split()[-1])
