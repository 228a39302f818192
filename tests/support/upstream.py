"""A local aiohttp server standing in for the external APIs and pages the built-in tasks fetch.

It runs on its own event loop in a thread: Litestar's test client blocks the test's loop while the
app (in another thread) handles a request, and that request may be the one fetching from here.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

POSTS = [
    {"id": 1, "title": "first", "body": "a"},
    {"id": 2, "title": "second", "body": "b"},
    {"title": "no id"},
]
HUGE_TOTAL = 50 * 1024 * 1024
HUGE_CHUNK = 64 * 1024

PAGE = """<!doctype html>
<html><head>
  <title>  The   index </title>
  <meta name="Description" content=" What this page is about. ">
</head><body>
  <h1>Main <em>heading</em></h1>
  <p>text</p>
  <h3>Deep</h3>
  <h2>Second</h2>
  <h4>not kept</h4>
  <a href="/about">About us</a>
  <a href="about">Relative</a>
  <a href="/about#team">About (team)</a>
  <a href="https://example.org/x?q=1">Elsewhere</a>
  <a href="mailto:me@example.org">Mail</a>
  <a href="javascript:void(0)">Script</a>
</body></html>
"""


@dataclass
class Upstream:
    """What the server saw, for tests to assert on."""

    base: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    huge_sent: int = 0
    huge_done: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def _app(state: Upstream) -> web.Application:
    async def posts(_request: web.Request) -> web.Response:
        return web.json_response(POSTS)

    async def wrapped(_request: web.Request) -> web.Response:
        return web.json_response({"data": POSTS[:2], "meta": {"count": 2}})

    async def single(_request: web.Request) -> web.Response:
        return web.json_response({"id": "abc", "name": "only"})

    async def flaky(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        state.hits[key] += 1
        if state.hits[key] == 1:
            return web.Response(status=500, text="try again")
        return web.json_response(POSTS[:2])

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response([])

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)
        chunk = b" " * HUGE_CHUNK
        try:
            while state.huge_sent < HUGE_TOTAL:
                await response.write(chunk)
                state.huge_sent += len(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            state.huge_done.set()
        return response

    async def text(_request: web.Request) -> web.Response:
        return web.Response(text="hello, not JSON", content_type="text/plain")

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", charset="utf-8")

    async def redirect(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        target = "/html/index" if left <= 1 else f"/redirect/{left - 1}"
        raise web.HTTPFound(target)

    async def to_localhost(_request: web.Request) -> web.Response:
        raise web.HTTPFound(state.base.replace("127.0.0.1", "localhost") + "/html/index")

    async def headers(request: web.Request) -> web.Response:
        seen = {name: request.headers.get(name) for name in ("Authorization", "X-Tenant")}
        return web.json_response([{"id": 1, **seen}])

    async def headers_elsewhere(_request: web.Request) -> web.Response:
        raise web.HTTPFound(state.base.replace("127.0.0.1", "localhost") + "/headers")

    async def headers_here(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/headers")

    async def bad_redirect(_request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://[::1"})

    async def image(_request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n", content_type="image/png")

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        state.requests += 1
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[count])
    app.add_routes(
        [
            web.get("/posts", posts),
            web.get("/wrapped", wrapped),
            web.get("/single", single),
            web.get("/flaky/{key}", flaky),
            web.get("/status/{code}", status),
            web.get("/slow", slow),
            web.get("/huge", huge),
            web.get("/text", text),
            web.get("/html/index", page),
            web.get("/redirect/{n}", redirect),
            web.get("/to-localhost", to_localhost),
            web.get("/image", image),
            web.get("/headers", headers),
            web.get("/headers-elsewhere", headers_elsewhere),
            web.get("/headers-here", headers_here),
            web.get("/bad-redirect", bad_redirect),
        ]
    )
    return app


@contextmanager
def upstream_server() -> Iterator[Upstream]:
    """The server on 127.0.0.1 and a free port, in its own thread, for the length of the block."""
    state = Upstream()
    loop = asyncio.new_event_loop()
    server = TestServer(_app(state), host="127.0.0.1", loop=loop)
    thread = threading.Thread(target=loop.run_forever, name="upstream", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start_server(), loop).result(10)
        state.base = str(server.make_url("")).rstrip("/")
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
