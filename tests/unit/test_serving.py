"""The protocol `skiplock serve` answers HTTP with: a response of known length leaves in one write,
and every other response is exactly what uvicorn's own httptools protocol sends."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from skiplock.api.serving import OneWriteHttpToolsProtocol
from tests.support.waiting import wait_until

HEAD_SEEN = "head_seen"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A tiny ASGI app: a JSON answer, an empty 204, a stream whose first part waits for the
    client to have read its head, and a failure after the head was sent."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/json":
        body = b'{"ok": true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await asyncio.wait_for(app_events[HEAD_SEEN].wait(), 5)
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/broken":
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise RuntimeError("failed after the head")


app_events: dict[str, asyncio.Event] = {}


@pytest.fixture
async def server() -> AsyncIterator[int]:
    app_events[HEAD_SEEN] = asyncio.Event()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=OneWriteHttpToolsProtocol, lifespan="off", log_config=None
    )
    served = uvicorn.Server(config)
    task = asyncio.ensure_future(served.serve(sockets=None))
    await wait_until(lambda: served.started, timeout=10)
    try:
        yield port
    finally:
        served.should_exit = True
        await task


async def exchange(port: int, request: bytes, *, until: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        if until:
            return await asyncio.wait_for(reader.readuntil(until), 5)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def get(path: str, *, method: str = "GET", close: bool = True) -> bytes:
    connection = b"connection: close\r\n" if close else b""
    return f"{method} {path} HTTP/1.1\r\nhost: t\r\n".encode() + connection + b"\r\n"


async def test_a_response_of_known_length_is_whole_and_keeps_the_connection(server: int) -> None:
    two = get("/json", close=False) + get("/json")  # pipelined on one connection
    answer = await exchange(server, two)
    assert answer.count(b"HTTP/1.1 201 Created\r\n") == 2
    assert answer.count(b'\r\n\r\n{"ok": true}') == 2
    assert b"content-length: 12\r\n" in answer


async def test_head_and_204_answer_with_a_head_alone(server: int) -> None:
    head = await exchange(server, get("/json", method="HEAD"))
    assert head.startswith(b"HTTP/1.1 201 Created\r\n")
    assert head.endswith(b"\r\n\r\n")
    empty = await exchange(server, get("/empty"))
    assert empty.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert empty.endswith(b"\r\n\r\n")


async def test_a_streamed_response_sends_its_head_before_its_first_part(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        writer.write(get("/stream"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # the app waits for this
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked\r\n" in head
        app_events[HEAD_SEEN].set()
        assert await asyncio.wait_for(reader.read(), 5) == b"4\r\npart\r\n0\r\n\r\n"
    finally:
        writer.close()


async def test_an_app_failing_after_its_head_closes_the_connection(server: int) -> None:
    assert await exchange(server, get("/broken")) == b""  # as uvicorn: the connection is closed


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_head_and_body_of_a_known_length_leave_in_one_write() -> None:
    config = uvicorn.Config(app, http=OneWriteHttpToolsProtocol, lifespan="off", log_config=None)
    config.load()
    protocol = OneWriteHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(get("/json", close=False))
    await asyncio.gather(*protocol.server_state.tasks)  # the request's task, then none
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 201 Created\r\n")
    assert transport.writes[0].endswith(b'\r\n\r\n{"ok": true}')
    protocol.connection_lost(None)
