"""The HTTP/1.1 protocol ``skiplock serve`` runs under uvicorn: uvicorn's httptools protocol, with
a response of known length sent in one write, head and body together.

uvicorn writes the head when the app sends ``http.response.start`` and the body when it sends
``http.response.body``: two syscalls, two TCP segments and two wake-ups of the client for every
small JSON answer. Here the head waits for the body's first write instead. Only a response with a
``content-length`` (not HEAD) is held: a streamed one (the event stream, chunked) gets its head at
once, as before, since its first body part may be a long time coming.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _Captured:
    """Stands in for the transport while uvicorn writes a head: keeps the bytes written; anything
    else goes to the transport itself."""

    __slots__ = ("data", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _Prefixed:
    """Stands in for the transport while uvicorn writes a body: the held head goes first, in the
    same write; anything else goes to the transport itself."""

    __slots__ = ("head", "transport")

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        head, self.head = self.head, b""
        self.transport.write(head + data if head else data)

    def close(self) -> None:
        if self.head:
            self.write(b"")
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _OneWriteCycle(RequestResponseCycle):
    _head = b""

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            # uvicorn's own first step: done here, so no stand-in is in place across an await.
            await self.flow.drain()
        if message["type"] == "http.response.start" and not self.response_started:
            transport = self.transport
            captured = _Captured(transport)
            self.transport = cast(asyncio.Transport, captured)
            try:
                await super().send(message)
            finally:
                self.transport = transport
            if self.chunked_encoding is False and self.scope["method"] != "HEAD":
                self._head = captured.data  # the body's first write carries it
            elif captured.data:
                transport.write(captured.data)
            return
        if not self._head:
            await super().send(message)
            return
        transport = self.transport
        self.transport = cast(asyncio.Transport, _Prefixed(transport, self._head))
        self._head = b""
        try:
            await super().send(message)
        finally:
            self.transport = transport


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose requests answer through :class:`_OneWriteCycle`."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        # The cycle was made just now and its task has not started yet: it can still change class.
        if self.cycle is not before and type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = _OneWriteCycle
