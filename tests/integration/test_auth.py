"""API keys end to end: the stored hash, 401/403/allowed on every route, websockets, the dashboard's
cookie and CSRF, and the refusal to serve the world without a key."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import asyncpg
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute, WebSocketRoute
from litestar.testing import AsyncTestClient

from skiplock.api.security import PUBLIC, SCOPE
from skiplock.app import create_app
from skiplock.auth import KeyStore, Scope
from skiplock.db.pool import create_pool
from tests.conftest import make_settings
from tests.support.live import live_server
from tests.support.workers import ROOT

Client = AsyncTestClient[Any]


@pytest.fixture
async def keys(dsn: str) -> dict[str, str]:
    """One key per scope, and one with every scope but admin."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    store = KeyStore(pool)
    made = {scope.value: (await store.create(scope.value, [scope]))[1] for scope in Scope}
    made["all-but-admin"] = (await store.create("rw", [s for s in Scope if s is not Scope.ADMIN]))[1]
    await pool.close()
    return made


@pytest.fixture
async def app(dsn: str, keys: dict[str, str]) -> Litestar:
    return create_app(make_settings(dsn), tasks=[])


@pytest.fixture
async def api(app: Litestar) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def http_routes(app: Litestar) -> list[tuple[str, str, Any]]:
    """(method, concrete path, handler) for every HTTP route, path parameters set to 1."""
    found: list[tuple[str, str, Any]] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods):
                if method not in ("HEAD", "OPTIONS"):
                    found.append((method, path, handler))
    return found


def is_public(path: str, handler: Any) -> bool:
    return bool(handler.opt.get(PUBLIC)) or path.startswith(("/schema", "/ui/static"))


async def test_the_key_is_shown_once_and_only_its_hash_is_kept(dsn: str, db: asyncpg.Connection) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    store = KeyStore(pool)
    row, key = await store.create("ci", [Scope.JOBS_READ])
    stored = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", row.id)
    assert stored is not None
    assert key.startswith("sk_")
    assert key not in str(dict(stored))
    assert key.startswith(stored["prefix"])
    principal = await store.verify(key)
    assert principal is not None
    assert principal.scopes == {Scope.JOBS_READ}
    assert await store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    await store.revoke("ci")
    assert await KeyStore(pool).verify(key) is None  # a fresh cache: revoked everywhere within 10 s
    await pool.close()


def test_every_route_declares_a_scope_or_is_public(app: Litestar) -> None:
    undeclared = [
        (method, path)
        for method, path, handler in http_routes(app)
        if not is_public(path, handler) and SCOPE not in handler.opt
    ]
    undeclared += [
        ("WS", route.path)
        for route in app.routes
        if isinstance(route, WebSocketRoute) and SCOPE not in route.route_handler.opt
    ]
    assert undeclared == []


async def test_every_route_is_401_without_a_key_403_without_its_scope(
    app: Litestar, api: Client, keys: dict[str, str]
) -> None:
    checked = 0
    for method, path, handler in http_routes(app):
        if is_public(path, handler):
            continue
        needed = handler.opt[SCOPE]
        body: dict[str, Any] = {"json": {}} if method in ("POST", "PATCH", "PUT") else {}
        anonymous = await api.request(method, path, follow_redirects=False, **body)
        if path.startswith("/ui"):  # a page asks for the key instead
            assert anonymous.status_code in (302, 303), (method, path, anonymous.text)
            assert anonymous.headers["location"].startswith("/ui/login?next=/ui")
        else:
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.json()["status_code"] == 401
        wrong = next(k for scope, k in keys.items() if scope not in (needed, "admin", "all-but-admin"))
        denied = await api.request(method, path, headers=bearer(wrong), **body)
        assert denied.status_code == 403, (method, path, denied.text)
        assert needed in denied.text
        for allowed_key in (keys[needed], keys["admin"]):
            allowed = await api.request(method, path, headers=bearer(allowed_key), **body)
            assert allowed.status_code not in (401, 403, 500), (method, path, allowed.text)
        checked += 1
    assert checked >= 30


async def test_health_ready_and_schema_need_no_key(api: Client) -> None:
    for path in ("/health", "/ready", "/schema/openapi.json", "/ui/static/app.js"):
        assert (await api.get(path)).status_code == 200, path
    assert (await api.get("/jobs", headers=bearer("sk_nonsense_and_more_of_it"))).status_code == 401


async def test_websockets_take_the_key_as_query_token_or_subprotocol(dsn: str, keys: dict[str, str]) -> None:
    async with live_server(make_settings(dsn), []) as base, aiohttp.ClientSession() as http:
        sleep = {"task": "sleep", "args": {"seconds": 0}}
        async with http.post(f"{base}/jobs", json=sleep, headers=bearer(keys["jobs:write"])) as created:
            job_id = (await created.json())["id"]
        url = base.replace("http://", "ws://") + f"/ws/jobs/{job_id}"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            async with http.ws_connect(url):
                pass
        with pytest.raises(aiohttp.WSServerHandshakeError):
            async with http.ws_connect(f"{url}?token={keys['schedules:write']}"):
                pass
        async with http.ws_connect(f"{url}?token={keys['jobs:read']}") as socket:
            first = await socket.receive_json(timeout=10)
        assert first["kind"] == "snapshot"
        assert first["job"]["id"] == job_id
        # The way a browser sends it: as a subprotocol, which the server names back.
        async with http.ws_connect(url, protocols=("bearer", keys["jobs:read"])) as socket:
            assert socket.protocol == "bearer"
            assert (await socket.receive_json(timeout=10))["kind"] == "snapshot"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            async with http.ws_connect(url, protocols=("bearer", keys["schedules:write"])):
                pass


async def test_the_dashboard_asks_for_a_key_and_keeps_it_in_a_cookie(
    api: Client, keys: dict[str, str]
) -> None:
    page = await api.get("/ui/jobs", follow_redirects=False)
    assert page.status_code in (302, 303, 307)
    assert page.headers["location"].startswith("/ui/login")
    form = await api.get("/ui/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    refused = await api.post("/ui/login", data={"key": keys["jobs:read"]})  # no CSRF token
    assert refused.status_code == 403
    empty = await api.post("/ui/login", data={"key": "", "_csrf_token": token.group(1)})
    assert empty.status_code == 400
    assert "key" in empty.json()["detail"] + str(empty.json().get("extra"))
    wrong = await api.post("/ui/login", data={"key": "sk_wrong_wrong_wrong", "_csrf_token": token.group(1)})
    assert wrong.status_code == 401
    signed_in = await api.post(
        "/ui/login",
        data={"key": keys["all-but-admin"], "_csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"]
    assert "skiplock_key=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert (await api.get("/ui/jobs")).status_code == 200
    # The cookie alone does not make a write: the dashboard's script echoes the CSRF cookie.
    bare = await api.post("/jobs", json={"task": "sleep", "args": {"seconds": 0}})
    assert bare.status_code == 403
    echoed = await api.post(
        "/jobs",
        json={"task": "sleep", "args": {"seconds": 0}},
        headers={"x-csrftoken": api.cookies["csrftoken"]},
    )
    assert echoed.status_code == 201, echoed.text


def cli_env(dsn: str) -> dict[str, str]:
    """A skiplock command's environment: this test's database, nothing of the caller's."""
    return {
        "DATABASE_URL": dsn,
        "PYTHONPATH": str(ROOT),
        "SKIPLOCK_LOG_LEVEL": "warning",
        "PATH": "/usr/bin:/bin",
    }


def test_serving_a_public_address_without_keys_is_refused_in_one_line(dsn: str) -> None:
    env = cli_env(dsn)
    done = subprocess.run(
        [sys.executable, "-m", "skiplock", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "skiplock: refusing to serve on 0.0.0.0 without API keys: create one with `skiplock keys create"
        " --name NAME --scopes admin`, or set SKIPLOCK_AUTH=off to run open on purpose"
    ]


def test_keys_commands_create_list_and_revoke(dsn: str) -> None:
    env = cli_env(dsn)

    def skiplock(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "skiplock", "keys", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def at_once(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Commands that do not depend on each other, side by side (each is a process start)."""
        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda args: skiplock(*args), commands))

    created, bad = at_once(
        ("create", "--name", "ci", "--scopes", "jobs:write,jobs:read"),
        ("create", "--name", "bad", "--scopes", "root"),
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"sk_[A-Za-z0-9_-]{32}", key)
    assert bad.returncode == 2
    listed = skiplock("list").stdout
    assert "ci\t" + key[:11] + "\tjobs:read,jobs:write\tlast used never\tlive" in listed
    assert key not in listed
    assert skiplock("revoke", "ci").returncode == 0
    listed_after, again = at_once(("list",), ("revoke", "ci"))
    assert "revoked" in listed_after.stdout
    assert again.returncode == 2


async def test_a_bulk_delete_needs_admin_retry_and_cancel_jobs_write(
    api: Client, keys: dict[str, str]
) -> None:
    delete = {"action": "delete", "ids": [10**9]}
    for key in (keys["jobs:write"], keys["all-but-admin"]):
        denied = await api.post("/jobs/bulk", json=delete, headers=bearer(key))
        assert denied.status_code == 403, denied.text
        assert "a bulk delete needs the 'admin' scope" in denied.text
    allowed = await api.post("/jobs/bulk", json=delete, headers=bearer(keys["admin"]))
    assert allowed.status_code == 202, allowed.text
    for action in ("retry", "cancel"):
        body = {"action": action, "ids": [10**9]}
        started = await api.post("/jobs/bulk", json=body, headers=bearer(keys["jobs:write"]))
        assert started.status_code == 202, started.text
