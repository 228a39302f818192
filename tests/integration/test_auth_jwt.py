"""JWT bearer tokens beside API keys: a shared secret, or an identity provider's JWKS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar.testing import AsyncTestClient

from tests.conftest import make_settings
from tests.support.live import app_client

Client = AsyncTestClient[Any]
SECRET = "a-long-test-secret-for-hs256-signing-ok"


def token(
    key: Any = SECRET, algorithm: str = "HS256", headers: dict[str, str] | None = None, **claims: Any
) -> str:
    body = {
        "sub": "alice",
        "exp": int(time.time()) + 60,
        "aud": "skiplock",
        "iss": "https://idp.test",
        **claims,
    }
    return jwt.encode(body, key, algorithm=algorithm, headers=headers)


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[Client]:
    settings = make_settings(
        dsn, jwt_secret=SECRET, jwt_audience="skiplock", jwt_issuer="https://idp.test", auth="on"
    )
    async with app_client(settings) as client:
        yield client


async def test_a_valid_token_acts_with_its_scopes(api: Client) -> None:
    reader = token(scope="jobs:read openid profile")
    assert (await api.get("/jobs", headers=bearer(reader))).status_code == 200
    denied = await api.post("/jobs", json={"task": "sleep", "args": {"seconds": 0}}, headers=bearer(reader))
    assert denied.status_code == 403
    writer = token(scope=["jobs:write"])
    created = await api.post("/jobs", json={"task": "sleep", "args": {"seconds": 0}}, headers=bearer(writer))
    assert created.status_code == 201


@pytest.mark.parametrize(
    "bad",
    [
        token(scope="jobs:read", exp=int(time.time()) - 10),  # expired
        token(scope="jobs:read", aud="someone-else"),
        token(scope="jobs:read", iss="https://evil.test"),
        token("another-secret-of-the-right-length-xx", scope="jobs:read"),
        jwt.encode(
            {"sub": "x", "scope": "jobs:read", "aud": "skiplock", "iss": "https://idp.test"}, SECRET
        ),  # no exp
        "not.a.jwt",
    ],
)
async def test_a_bad_token_is_401(api: Client, bad: str) -> None:
    response = await api.get("/jobs", headers=bearer(bad))
    assert response.status_code == 401
    assert response.json()["status_code"] == 401


@pytest.fixture
def jwks() -> Iterator[tuple[str, Any]]:
    """An identity provider's key set, served on 127.0.0.1 from a thread."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", private
    server.shutdown()
    thread.join(5)
    server.server_close()


async def test_tokens_signed_by_a_jwks_key(dsn: str, jwks: tuple[str, Any]) -> None:
    url, private = jwks
    settings = make_settings(dsn, jwt_jwks_url=url, jwt_audience="skiplock", auth="on")
    async with app_client(settings) as api:
        good = token(private, "RS256", headers={"kid": "k1"}, scope="jobs:read")
        assert (await api.get("/jobs", headers=bearer(good))).status_code == 200
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = token(other, "RS256", headers={"kid": "k1"}, scope="jobs:read")
        assert (await api.get("/jobs", headers=bearer(forged))).status_code == 401
        hmac_with_public = token(SECRET, scope="jobs:read", headers={"kid": "k1"})  # algorithm confusion
        assert (await api.get("/jobs", headers=bearer(hmac_with_public))).status_code == 401
