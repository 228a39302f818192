"""The app for a test: through Litestar's test client, or as a real server on a free port in this
test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient

from skiplock.app import create_app
from skiplock.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def app_client(
    settings: Settings, tasks: Iterable[Any] = (), **options: Any
) -> AsyncIterator[AsyncTestClient[Any]]:
    """The whole app (engine and workers as ``settings`` say) through Litestar's test client;
    ``options`` go to create_app (``tracer_provider``)."""
    async with AsyncTestClient(app=create_app(settings, tasks=list(tasks), **options)) as client:
        yield client


@asynccontextmanager
async def live_server(settings: Settings, tasks: list[Any]) -> AsyncIterator[str]:
    """Serve the app on 127.0.0.1:<free port>; yields the base URL."""
    async with serve(create_app(settings, tasks=tasks)) as base:
        yield base


@asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[str]:
    """Serve ``app`` (made by the test, so it can reach the engine inside) on 127.0.0.1:<free
    port>; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
