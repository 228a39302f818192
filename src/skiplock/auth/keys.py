"""API keys with scopes: created once (the key is shown then and never stored), listed, revoked,
and verified on every request from a short-lived in-memory cache."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pydantic import BaseModel

from skiplock.auth._statements import KEYS
from skiplock.errors import ConflictError, InvalidArgumentsError, NotFoundError

KEY_PREFIX = "sk_"
_PREFIX_CHARS = 8
_CACHE_S = 10.0  # a revoked key stops working within this long on every replica


class Scope(enum.StrEnum):
    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"  # enqueue, cancel, retry, fetch
    SCHEDULES_WRITE = "schedules:write"
    ADMIN = "admin"  # queues, keys, imports; and everything else


class ApiKey(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as, and what it may do."""

    name: str
    scopes: frozenset[Scope]
    key_id: int | None = None

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


#: Requests when authentication is off.
ANONYMOUS = Principal("anonymous", frozenset({Scope.ADMIN}))


def parse_scopes(text: str) -> list[Scope]:
    """``"jobs:read,jobs:write"`` → scopes; InvalidArgumentsError naming an unknown one."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise InvalidArgumentsError(f"give at least one scope: {', '.join(s.value for s in Scope)}")
    try:
        return sorted({Scope(name) for name in names})
    except ValueError as exc:
        known = ", ".join(s.value for s in Scope)
        raise InvalidArgumentsError(f"unknown scope in {text!r}; known: {known}") from exc


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _prefix_of(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + _PREFIX_CHARS + 8:
        return None
    return key[: len(KEY_PREFIX) + _PREFIX_CHARS]


class KeyStore:
    """The api_keys table, and verification with a cache of recent answers."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._verified: dict[bytes, tuple[float, Principal | None]] = {}

    async def create(self, name: str, scopes: list[Scope]) -> tuple[ApiKey, str]:
        """A new key: its row and the key itself (shown once; only its hash is stored)."""
        key = KEY_PREFIX + secrets.token_urlsafe(24)  # 32 characters after the prefix
        prefix = _prefix_of(key)
        assert prefix is not None
        try:
            row = await self.pool.fetchrow(
                KEYS.key_insert, name, prefix, _digest(key), [s.value for s in scopes]
            )
        except asyncpg.UniqueViolationError as exc:
            raise ConflictError(f"a key named {name!r} exists already") from exc
        return ApiKey.model_validate(dict(row)), key  # type: ignore[arg-type]

    async def all(self) -> list[ApiKey]:
        return [ApiKey.model_validate(dict(r)) for r in await self.pool.fetch(KEYS.key_list)]

    async def revoke(self, name_or_prefix: str) -> ApiKey:
        row = await self.pool.fetchrow(KEYS.key_revoke, name_or_prefix)
        if row is None:
            raise NotFoundError(f"no live key named or prefixed {name_or_prefix!r}")
        return ApiKey.model_validate(dict(row))

    async def live_count(self) -> int:
        count: int = await self.pool.fetchval(KEYS.key_live_count)
        return count

    async def verify(self, key: str) -> Principal | None:
        """The key's principal, or None for an unknown, malformed or revoked key."""
        digest = _digest(key)
        now = time.monotonic()
        cached = self._verified.get(digest)
        if cached is not None and now - cached[0] < _CACHE_S:
            return cached[1]
        principal = await self._lookup(key, digest)
        if len(self._verified) > 10_000:  # bad keys must not grow it without bound
            self._verified.clear()
        self._verified[digest] = (now, principal)
        return principal

    async def _lookup(self, key: str, digest: bytes) -> Principal | None:
        prefix = _prefix_of(key)
        if prefix is None:
            return None
        row = await self.pool.fetchrow(KEYS.key_find, prefix)
        if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
            return None
        await self.pool.execute(KEYS.key_touch, row["id"])
        return Principal(row["name"], frozenset(Scope(s) for s in row["scopes"]), key_id=row["id"])

    async def secret(self) -> str:
        """The installation's secret, the same for every replica."""
        value: str = await self.pool.fetchval(KEYS.instance_secret)
        return value
