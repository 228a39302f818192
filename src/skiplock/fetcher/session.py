"""The process's one outbound HTTP session, with the limits every fetch runs under."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from skiplock import tracing
from skiplock._version import __version__
from skiplock.errors import (
    BadResponseError,
    FetchError,
    FetchRefusedError,
    FetchTimeoutError,
    UpstreamStatusError,
)
from skiplock.fetcher.guard import FetchPolicy, GuardedResolver

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Fetched:
    """A response read in full (within the size cap)."""

    url: str  # after redirects
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    redirects: int

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        for part in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = part.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                return value.strip().strip('"')
        return None

    def json(self) -> Any:
        """The body as JSON, or BadResponseError saying what came instead."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            kind = self.content_type or "no content-type"
            raise BadResponseError(
                f"{self.url} did not return JSON ({kind}): {exc}", url=self.url, content_type=kind
            ) from exc

    def text(self) -> str:
        """The body decoded with its declared charset (UTF-8 otherwise); bad bytes replaced."""
        try:
            return self.body.decode(self.charset or "utf-8", errors="replace")
        except LookupError:  # an unknown charset name
            return self.body.decode("utf-8", errors="replace")


class Fetcher:
    """GET with a body cap enforced while streaming, a redirect limit, http(s) only, and the
    address policy checked on every hop. Start it once per process; tasks share it."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy), limit=100)
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # a proxy from the environment would bypass the address policy
            headers={"User-Agent": f"skiplock/{__version__}"},
            trace_configs=tracing.aiohttp_trace_configs(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, url: str, *, headers: dict[str, str] | None = None, timeout_s: float = 30) -> Fetched:
        """GET ``url``, following up to ``policy.max_redirects`` redirects, within ``timeout_s`` in all."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._follow(URL(url), headers or {})
        except TimeoutError as exc:
            raise FetchTimeoutError(f"{url}: no complete answer within {timeout_s:g}s", url=url) from exc
        except aiohttp.ClientError as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}", url=url) from exc

    async def _follow(self, url: URL, headers: dict[str, str]) -> Fetched:
        assert self._session is not None, "the fetcher is not started"
        origin = url.origin()
        for hop in range(self.policy.max_redirects + 1):
            self._check_url(url)
            sent = headers if url.origin() == origin else {}  # the caller's credentials stay with its host
            async with self._session.get(url, headers=sent, allow_redirects=False) as response:
                location = response.headers.get("location")
                if response.status in _REDIRECTS and location:
                    url = self._redirect(url, location)
                    continue
                if response.status >= 400:
                    raise UpstreamStatusError(
                        f"{url} answered {response.status} {response.reason or ''}".strip(),
                        status=response.status,
                        url=str(url),
                    )
                body = await self._read_capped(response, url)
                return Fetched(str(url), response.status, response.headers, body, redirects=hop)
        raise FetchRefusedError(f"{url}: more than {self.policy.max_redirects} redirects", url=str(url))

    @staticmethod
    def _redirect(url: URL, location: str) -> URL:
        try:
            return url.join(URL(location))
        except ValueError as exc:
            raise BadResponseError(f"{url} redirected to a malformed URL {location[:200]!r}") from exc

    def _check_url(self, url: URL) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise FetchRefusedError(f"only http and https URLs can be fetched, not {str(url)[:200]!r}")
        self.policy.check_literal(url.host)

    async def _read_capped(self, response: aiohttp.ClientResponse, url: URL) -> bytes:
        cap = self.policy.max_bytes
        declared = response.content_length
        if declared is not None and declared > cap:
            raise self._too_large(url, cap)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > cap:  # stop reading: the rest never reaches memory
                raise self._too_large(url, cap)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _too_large(url: URL, cap: int) -> BadResponseError:
        return BadResponseError(
            f"{url}: the body is larger than SKIPLOCK_FETCH_MAX_BYTES ({cap} bytes)", url=str(url), cap=cap
        )
