"""Storing an upload: the CSV received into a temporary file, then written with its import row and
job in one short transaction, all or nothing.

The body is never held whole in memory (past ~1 MiB it spools to disk), and no transaction is open
while the client sends: a slow client would otherwise hold a snapshot for its whole upload, and
vacuum could clean nothing behind it. A client that sends nothing for ``idle_timeout_s`` is cut
off (408). Once the file is whole, it is COPYed into ``import_chunks`` in ~1 MiB rows in the same
transaction that creates the ``imports`` row and enqueues the ``import_csv`` job, so a client sees
202 only once the file and its job are committed, and a refused or broken upload leaves nothing.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from typing import IO

import multipart  # type: ignore[import-untyped]

from skiplock.db.copy import copy_rows
from skiplock.errors import (
    InvalidUploadError,
    UnsupportedMediaTypeError,
    UploadTimeoutError,
    UploadTooLargeError,
)
from skiplock.queue.client import Client
from skiplock.tasks.import_csv._statements import IMPORTS
from skiplock.tasks.import_csv.models import ImportCreated

#: Size of the rows in import_chunks: few enough round trips, small enough to stream.
CHUNK_BYTES = 1 << 20
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
IMPORT_TASK = "import_csv"


class RawBody:
    """A ``text/csv`` body: every byte is the file."""

    filename: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        return [data]

    def close(self) -> None:
        """Nothing to check: any body is a file."""


class MultipartFile:
    """The first file part of a ``multipart/form-data`` body: the field named ``file``, or else the
    first part with a filename. Other parts are parsed and dropped."""

    def __init__(self, boundary: str) -> None:
        try:
            self._parser = multipart.PushMultipartParser(boundary)
        except multipart.MultipartError as exc:
            raise InvalidUploadError(f"bad multipart boundary: {exc}") from exc
        self._state = "looking"  # → "reading" the chosen part → "done"
        self.filename: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        pieces: list[bytes] = []
        try:
            for event in self._parser.parse(data):
                if isinstance(event, multipart.MultipartSegment):
                    if self._state == "looking" and (event.name == "file" or event.filename):
                        self._state = "reading"
                        self.filename = event.filename or None
                elif event is None:
                    if self._state == "reading":
                        self._state = "done"
                elif self._state == "reading":
                    pieces.append(bytes(event))
        except multipart.MultipartError as exc:
            raise InvalidUploadError(f"malformed multipart body: {exc}") from exc
        return pieces

    def close(self) -> None:
        try:
            self._parser.close()
        except multipart.MultipartError as exc:
            raise InvalidUploadError(f"malformed multipart body: {exc}") from exc
        if self._state == "looking":
            raise InvalidUploadError("multipart body has no file: send the CSV as a field named 'file'")


def body_reader(content_type: str | None) -> RawBody | MultipartFile:
    """How to find the file in a body of this content type; 415 for anything but CSV or multipart."""
    media, options = multipart.parse_options_header(content_type or "")
    media = media.lower()
    if media in CSV_TYPES:
        charset = options.get("charset", "utf-8").lower()
        if charset not in _UTF8:
            raise UnsupportedMediaTypeError(f"CSV must be UTF-8, not {charset!r}", content_type=content_type)
        return RawBody()
    if media == "multipart/form-data":
        boundary = options.get("boundary")
        if not boundary:
            raise InvalidUploadError("multipart/form-data without a boundary")
        return MultipartFile(boundary)
    raise UnsupportedMediaTypeError(
        f"cannot import {media or 'a body without a content-type'}: send text/csv or multipart/form-data",
        content_type=content_type,
    )


def too_large(max_bytes: int) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"upload larger than {max_bytes:,} bytes (SKIPLOCK_IMPORT_MAX_BYTES)", max_bytes=max_bytes
    )


async def store_upload(
    client: Client,
    body: AsyncGenerator[bytes, None],
    *,
    content_type: str | None,
    content_length: int | None,
    filename: str | None,
    max_bytes: int,
    idle_timeout_s: float,
) -> ImportCreated:
    """Store the CSV in ``body`` and enqueue its import job, in one transaction once it is whole.

    Raises (and keeps nothing) when the content type is not CSV or multipart (415), the body is
    larger than ``max_bytes`` (413, as soon as it is), the client sends nothing for
    ``idle_timeout_s`` (408), or it holds no file bytes at all (400).
    """
    reader = body_reader(content_type)
    if content_length is not None and content_length > max_bytes:
        raise too_large(max_bytes)  # before reading anything
    with tempfile.SpooledTemporaryFile(max_size=CHUNK_BYTES) as spool:
        size = await receive_file(body, reader, spool, max_bytes=max_bytes, idle_timeout_s=idle_timeout_s)
        if size == 0:
            raise InvalidUploadError("empty upload: a CSV needs at least a header row")
        spool.seek(0)
        # The tasks' pool: a COPY of up to SKIPLOCK_IMPORT_MAX_BYTES may outlast the engine's
        # statement limit (SKIPLOCK_DB_STATEMENT_TIMEOUT_S), which is sized for its own statements.
        async with client.task_pool.acquire() as conn, conn.transaction():
            import_id: int = await conn.fetchval(IMPORTS.import_insert, None)
            await copy_rows(conn, "import_chunks", ("import_id", "seq", "data"), _chunks(import_id, spool))
            job = await client.enqueue(IMPORT_TASK, {"import_id": import_id}, conn=conn)
            name = reader.filename or filename
            await conn.execute(IMPORTS.import_set_job, import_id, job.id, size, name[:1000] if name else None)
    return ImportCreated(import_id=import_id, job=job)


async def receive_file(
    body: AsyncGenerator[bytes, None],
    reader: RawBody | MultipartFile,
    out: IO[bytes],
    *,
    max_bytes: int,
    idle_timeout_s: float,
) -> int:
    """Write the file's bytes from ``body`` to ``out``; returns how many there were."""
    received = written = 0
    async with aclosing(body):
        while True:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    data = await anext(body, None)
            except TimeoutError:
                raise UploadTimeoutError(
                    f"the client sent nothing for {idle_timeout_s:g} s (SKIPLOCK_UPLOAD_BODY_TIMEOUT_S)",
                    timeout_s=idle_timeout_s,
                ) from None
            if data is None:
                break
            received += len(data)
            if received > max_bytes:
                raise too_large(max_bytes)
            for piece in reader.feed(data) if data else ():
                out.write(piece)  # a local file (or memory): fast enough not to need a thread
                written += len(piece)
    reader.close()
    return written


def _chunks(import_id: int, spool: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """The file as import_chunks rows of CHUNK_BYTES, numbered from 0, read as COPY sends them."""
    seq = 0
    while data := spool.read(CHUNK_BYTES):
        yield import_id, seq, data
        seq += 1
