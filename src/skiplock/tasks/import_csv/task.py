"""import_csv: load an uploaded CSV into ``items``, batch by batch, bad rows into ``failed_rows``.

The upload is read a few chunks at a time and never held whole. Python splits it into records
(header, column count, encoding); each batch is COPYed into a temporary staging table and checked
and upserted set-based by one statement, in its own transaction, which also advances the counters.
The next read is parsed while a batch is written, so Python and PostgreSQL work at the same time.

A run always starts from the first chunk: a run killed mid-way (its lease rescued) upserts the rows
it had loaded again with the same values, and failed rows it had written are kept once, so the
outcome is the same as one uninterrupted run's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from pydantic import BaseModel, Field

from skiplock.db.copy import copy_rows
from skiplock.db.pool import DB_UNAVAILABLE, AnyConnection
from skiplock.errors import PermanentJobError
from skiplock.queue.context import Context
from skiplock.queue.tasks import task
from skiplock.tasks.import_csv._statements import IMPORTS
from skiplock.tasks.import_csv.rows import CsvFileError, LineSplitter, RecordParser, StagedRow

#: Rows staged and checked per transaction: large enough that per-statement costs vanish, small
#: enough to bound memory and the work a killed run repeats.
BATCH_ROWS = 25_000
#: Upload chunks (about 1 MiB each) fetched per query.
CHUNKS_PER_READ = 2
#: Upload bytes split and parsed between two yields to the event loop (a few ms of work).
PARSE_SLICE_BYTES = 64 * 1024
STAGING_TABLE = "import_staging"
ITEMS_KEY = "items_pkey"

log = structlog.get_logger("skiplock.tasks.import_csv")


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
    """Write each batch while the next read is parsed beside it: PostgreSQL checks and upserts one
    batch on one core while Python parses the next on the other."""
    reader = _Reader()
    pending: list[StagedRow] = []
    last_seq = -1
    parsed_bytes = 0
    while True:
        chunks = await conn.fetch(IMPORTS.import_chunk_batch, run.import_id, last_seq, CHUNKS_PER_READ)
        final = not chunks
        data: list[bytes] = [chunk["data"] for chunk in chunks]
        last_seq = chunks[-1]["seq"] if chunks else last_seq
        parsing = asyncio.ensure_future(reader.parse(data, final=final))
        try:
            while len(pending) >= BATCH_ROWS:
                await _write_and_report(ctx, conn, reader, pending, run, parsed_bytes)
            with reader.parse_turn():
                pending += await parsing
        except BaseException:
            await _abandon(parsing)
            raise
        parsed_bytes += sum(map(len, data))
        del data
        if final:
            while pending:
                await _write_and_report(ctx, conn, reader, pending, run, parsed_bytes)
            return


async def _write_and_report(
    ctx: Context, conn: AnyConnection, reader: _Reader, pending: list[StagedRow], run: _Run, parsed: int
) -> None:
    """Write the first batch of ``pending`` and drop it from there."""
    await _write_batch(conn, reader, pending[:BATCH_ROWS], run)
    del pending[:BATCH_ROWS]
    fraction = min(parsed / run.total_bytes, 1.0) if run.total_bytes else 1.0
    await ctx.progress(fraction, f"{run.rows:,} rows, {run.failed:,} failed", current=run.rows)


async def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a parse the run no longer needs and wait for it, its outcome retrieved."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()


class _Reader:
    """The upload's bytes → staged rows, in slices between which the event loop runs: the batch
    being written goes on while the next is parsed, and the service's other work is not held up.

    It parses only in its turn: while PostgreSQL runs a batch's statement, or while no batch is
    being written. Beside a COPY it would only delay it: Python is busy sending those rows (each
    batch's COPY took three times as long).
    """

    def __init__(self) -> None:
        self.splitter = LineSplitter()
        self.parser = RecordParser()
        self._turn = asyncio.Event()

    @contextlib.contextmanager
    def parse_turn(self) -> Iterator[None]:
        self._turn.set()
        try:
            yield
        finally:
            self._turn.clear()

    async def parse(self, chunks: list[bytes], *, final: bool) -> list[StagedRow]:
        rows: list[StagedRow] = []
        for data in chunks:
            view = memoryview(data)
            for start in range(0, len(view), PARSE_SLICE_BYTES):
                await self._turn.wait()
                lines = self.splitter.feed(view[start : start + PARSE_SLICE_BYTES])
                rows += self.parser.parse(lines, final=False)
                await asyncio.sleep(0)
        if final:
            rows += self.parser.parse(self.splitter.finish(), final=True)
            self.parser.finish()
        return rows


async def _write_batch(conn: AnyConnection, reader: _Reader, rows: list[StagedRow], run: _Run) -> None:
    async with conn.transaction():
        # In the batch's transaction: through a transaction pooler, the next transaction may get
        # another server session, one without the table.
        await conn.execute(IMPORTS.import_staging_create)
        await conn.fetchrow(IMPORTS.import_batch_settings)
        await copy_rows(conn, STAGING_TABLE, reader.parser.columns, rows)
        with reader.parse_turn():
            counts = await _check_and_upsert(conn, run)
    assert counts is not None
    run.rows, run.loaded, run.failed = _counts(counts)


async def _check_and_upsert(conn: AnyConnection, run: _Run) -> asyncpg.Record | None:
    """The batch statement, from a savepoint so that the staged rows stay for a second try."""
    upsert_all = False  # another import inserted one of this batch's new skus since the probe
    trust_plain = True  # a value rows.py found plain was not: check every value here
    while True:
        try:
            async with conn.transaction():
                return await conn.fetchrow(
                    IMPORTS.import_load_batch, run.import_id, run.default_updated_at, upsert_all, trust_plain
                )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != ITEMS_KEY or upsert_all:
                raise
            upsert_all = True
        except (asyncpg.DataError, asyncpg.CheckViolationError):
            if not trust_plain:
                raise
            log.warning("import_plain_value_refused", import_id=run.import_id)
            trust_plain = False


async def _drop_staging(conn: AnyConnection) -> None:
    """Leave the pooled connection as it was; if it is broken, the pool replaces it anyway."""
    with contextlib.suppress(*DB_UNAVAILABLE):
        await conn.execute(IMPORTS.import_staging_drop)
