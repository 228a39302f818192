"""Storing an upload: the CSV streamed into ``import_chunks`` with its import row and job, all or nothing.

The body is never held whole: it is read as it arrives, cut into ~1 MiB chunks and inserted in one
transaction that also creates the ``imports`` row and enqueues the ``import_csv`` job, so a client
sees 202 only once the file and its job are committed, and a refused or broken upload leaves nothing.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import multipart  # type: ignore[import-untyped]

from skiplock.db.pool import AnyConnection
from skiplock.errors import InvalidUploadError, UnsupportedMediaTypeError, UploadTooLargeError
from skiplock.imports.models import ImportCreated
from skiplock.queue.client import Client
from skiplock.tasks._statements import IMPORTS

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


class ChunkWriter:
    """Buffers the file and inserts it in ~1 MiB rows, numbered from 0."""

    def __init__(self, conn: AnyConnection, import_id: int) -> None:
        self._conn = conn
        self._import_id = import_id
        self._buffer = bytearray()
        self._seq = 0
        self.bytes = 0

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self.bytes += len(data)
        if len(self._buffer) >= CHUNK_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            await self._conn.execute(
                IMPORTS.import_chunk_insert, self._import_id, self._seq, bytes(self._buffer)
            )
            self._seq += 1
            self._buffer.clear()


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
) -> ImportCreated:
    """Store the CSV in ``body`` and enqueue its import job, in one transaction.

    Raises (and keeps nothing) when the content type is not CSV or multipart (415), the body is
    larger than ``max_bytes`` (413, as soon as it is), or it holds no file bytes at all (400).
    """
    reader = body_reader(content_type)
    if content_length is not None and content_length > max_bytes:
        raise too_large(max_bytes)  # before reading anything
    received = 0
    async with client.pool.acquire() as conn, conn.transaction(), aclosing(body):
        import_id: int = await conn.fetchval(IMPORTS.import_insert, None)
        writer = ChunkWriter(conn, import_id)
        async for data in body:
            received += len(data)
            if received > max_bytes:
                raise too_large(max_bytes)
            for piece in reader.feed(data) if data else ():
                await writer.write(piece)
        reader.close()
        await writer.flush()
        if writer.bytes == 0:
            raise InvalidUploadError("empty upload: a CSV needs at least a header row")
        job = await client.enqueue(IMPORT_TASK, {"import_id": import_id}, conn=conn)
        name = reader.filename or filename
        await conn.execute(
            IMPORTS.import_set_job, import_id, job.id, writer.bytes, name[:1000] if name else None
        )
    return ImportCreated(import_id=import_id, job=job)
