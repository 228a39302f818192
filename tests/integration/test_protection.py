"""Rate limit, CORS and compression: Litestar's own middleware, as configured from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from skiplock.auth import KeyStore, Scope
from skiplock.db.pool import create_pool
from tests.conftest import make_settings
from tests.support.live import app_client

Client = AsyncTestClient[Any]


@pytest.fixture
async def limited(dsn: str) -> AsyncIterator[Client]:
    async with app_client(make_settings(dsn, rate_limit="5/minute")) as client:
        yield client


@pytest.fixture
async def cors_api(dsn: str) -> AsyncIterator[Client]:
    async with app_client(make_settings(dsn, cors_origins=["https://app.example"])) as client:
        yield client


async def test_the_sixth_request_a_minute_is_429_with_retry_after(limited: Client) -> None:
    statuses = [(await limited.get("/tasks")).status_code for _ in range(5)]
    assert statuses == [200] * 5
    refused = await limited.get("/tasks")
    assert refused.status_code == 429
    assert refused.json()["status_code"] == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "5"
    for _ in range(10):  # probes are never limited
        assert (await limited.get("/health")).status_code == 200


async def test_made_up_tokens_do_not_buy_a_fresh_budget(limited: Client) -> None:
    # Open mode: a token nobody verified is not an identity, so the client address pays.
    statuses = [
        (await limited.get("/tasks", headers={"authorization": f"Bearer sk_made_up_{n}"})).status_code
        for n in range(6)
    ]
    assert statuses == [200] * 5 + [429]


async def test_each_verified_key_has_its_own_budget(dsn: str) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    store = KeyStore(pool)
    first = (await store.create("first", [Scope.JOBS_READ]))[1]
    second = (await store.create("second", [Scope.JOBS_READ]))[1]
    await pool.close()
    async with app_client(make_settings(dsn, rate_limit="5/minute")) as api:
        for _ in range(5):
            assert (await api.get("/tasks", headers={"authorization": f"Bearer {first}"})).status_code == 200
        assert (await api.get("/tasks", headers={"authorization": f"Bearer {first}"})).status_code == 429
        assert (await api.get("/tasks", headers={"authorization": f"Bearer {second}"})).status_code == 200
        for n in range(10):  # unknown keys are refused by auth, before the limiter counts anything
            made_up = await api.get("/tasks", headers={"authorization": f"Bearer sk_made_up_key_{n:04d}"})
            assert made_up.status_code == 401


async def test_cors_preflight_from_an_allowed_origin_only(cors_api: Client, dsn: str) -> None:
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    allowed = await cors_api.options("/jobs", headers={"origin": "https://app.example", **preflight})
    assert allowed.status_code in (200, 204)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    denied = await cors_api.options("/jobs", headers={"origin": "https://evil.example", **preflight})
    assert denied.status_code == 400
    assert "access-control-allow-origin" not in denied.headers
    simple = await cors_api.get("/tasks", headers={"origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    async with app_client(make_settings(dsn)) as default:  # nothing is allowed unless configured
        plain = await default.get("/tasks", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in plain.headers


async def test_large_json_is_compressed_small_json_is_not(dsn: str) -> None:
    async with app_client(make_settings(dsn)) as api:
        for encoding in ("br", "gzip"):
            large = await api.get("/tasks", headers={"accept-encoding": encoding})  # every task's schema
            assert large.headers["content-encoding"] == encoding
            assert large.json()[0]["name"]  # decoded by the client: a real encoding
        small = await api.get("/health", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers


async def test_a_body_over_the_limit_is_413_on_any_endpoint(dsn: str) -> None:
    async with app_client(make_settings(dsn)) as api:
        too_big = b"[" + b" " * (11 * 1024 * 1024) + b"]"
        for path in ("/jobs", "/jobs/batch", "/schedules", "/fetch"):
            response = await api.post(path, content=too_big, headers={"content-type": "application/json"})
            assert response.status_code == 413, (path, response.text)
