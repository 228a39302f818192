"""import_csv: load an uploaded CSV into ``items``, batch by batch, bad rows into ``failed_rows``.

The upload is read a few chunks at a time and never held whole. Python splits it into records
(header, column count, encoding); each batch is COPYed into a temporary staging table and checked
and upserted set-based by one statement, in its own transaction, which also advances the counters.

A run always starts from the first chunk: a run killed mid-way (its lease rescued) upserts the rows
it had loaded again with the same values, and failed rows it had written are kept once, so the
outcome is the same as one uninterrupted run's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pydantic import BaseModel, Field

from skiplock.db.copy import copy_rows
from skiplock.db.pool import DB_UNAVAILABLE, AnyConnection
from skiplock.errors import PermanentJobError
from skiplock.imports.rows import CsvFileError, LineSplitter, RecordParser, StagedRow
from skiplock.queue.context import Context
from skiplock.queue.tasks import task
from skiplock.tasks._statements import IMPORTS

#: Rows staged and checked per transaction: large enough that per-statement costs vanish, small
#: enough to bound memory and the work a killed run repeats.
BATCH_ROWS = 25_000
#: Upload chunks (about 1 MiB each) fetched per query.
CHUNKS_PER_READ = 2
STAGING_TABLE = "import_staging"


class ImportArgs(BaseModel):
    import_id: int = Field(ge=1, le=2**63 - 1, description="The import POST /imports created.")


@dataclass(slots=True)
class _Run:
    import_id: int
    total_bytes: int
    default_updated_at: datetime  # the import's created_at: a re-run stamps rows the same
    rows: int = 0
    loaded: int = 0
    failed: int = 0

    def result(self) -> dict[str, int]:
        return {"import_id": self.import_id, "rows": self.rows, "loaded": self.loaded, "failed": self.failed}


@task("import_csv", args=ImportArgs)
async def import_csv(ctx: Context, args: ImportArgs) -> dict[str, int]:
    """Load an uploaded CSV into items; invalid rows go to failed_rows and the import goes on."""
    async with ctx.pool.acquire() as conn:
        run, finished = await _begin(conn, args.import_id)
        if finished:
            return run.result()
        await conn.execute(IMPORTS.import_staging_create)
        try:
            await _load(ctx, conn, run)
        except CsvFileError as exc:
            await conn.fetchrow(IMPORTS.import_finish, run.import_id, "failed", str(exc))
            raise PermanentJobError(str(exc)) from exc
        finally:
            await _drop_staging(conn)
        counts = await conn.fetchrow(IMPORTS.import_finish, run.import_id, "succeeded", None)
    assert counts is not None
    run.rows, run.loaded, run.failed = _counts(counts)
    return run.result()


async def _begin(conn: AnyConnection, import_id: int) -> tuple[_Run, bool]:
    """Start (or restart) the run; a run that already finished repeats its outcome instead
    (it finished, then its process died before the job was marked done)."""
    async with conn.transaction():
        state = await conn.fetchrow(IMPORTS.import_run_state, import_id)
        if state is None:
            raise PermanentJobError(f"no import with id {import_id}")
        if state["state"] == "failed":
            raise PermanentJobError(state["error"] or "import failed")
        run = _Run(import_id, state["bytes"], state["created_at"])
        if state["state"] == "succeeded":
            run.rows, run.loaded, run.failed = _counts(state)
            return run, True
        await conn.execute(IMPORTS.import_begin_run, import_id)
    return run, False


def _counts(record: asyncpg.Record) -> tuple[int, int, int]:
    return record["rows"], record["loaded"], record["failed"]


async def _load(ctx: Context, conn: AnyConnection, run: _Run) -> None:
    splitter = LineSplitter()
    parser = RecordParser()
    pending: list[StagedRow] = []
    last_seq = -1
    bytes_read = 0
    while True:
        chunks = await conn.fetch(IMPORTS.import_chunk_batch, run.import_id, last_seq, CHUNKS_PER_READ)
        final = not chunks
        lines = splitter.finish() if final else []
        for chunk in chunks:
            data: bytes = chunk["data"]
            lines += splitter.feed(data)
            bytes_read += len(data)
            last_seq = chunk["seq"]
        pending += parser.parse(lines, final=final)
        del lines
        if final:
            parser.finish()
        while len(pending) >= BATCH_ROWS or (final and pending):
            await _write_batch(conn, parser, pending[:BATCH_ROWS], run)
            del pending[:BATCH_ROWS]
            fraction = min(bytes_read / run.total_bytes, 1.0) if run.total_bytes else 1.0
            await ctx.progress(fraction, f"{run.rows:,} rows, {run.failed:,} failed", current=run.rows)
        if final:
            return


async def _write_batch(conn: AnyConnection, parser: RecordParser, rows: list[StagedRow], run: _Run) -> None:
    async with conn.transaction():
        await conn.fetchrow(IMPORTS.import_batch_settings)
        await copy_rows(conn, STAGING_TABLE, parser.columns, rows)
        counts = await conn.fetchrow(IMPORTS.import_load_batch, run.import_id, run.default_updated_at)
    assert counts is not None
    run.rows, run.loaded, run.failed = _counts(counts)


async def _drop_staging(conn: AnyConnection) -> None:
    """Leave the pooled connection as it was; if it is broken, the pool replaces it anyway."""
    with contextlib.suppress(*DB_UNAVAILABLE):
        await conn.execute(IMPORTS.import_staging_drop)
