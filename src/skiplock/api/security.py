"""Who is calling and what they may do: API keys (bearer header, query token for browsers' websockets
and event streams, or the dashboard's cookie), a scope per route, and the dashboard's CSRF rules."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from secrets import compare_digest
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

from skiplock.auth import ANONYMOUS, KEY_PREFIX, AuthMode, KeyStore, Principal, Scope, TokenVerifier

#: Route option naming the scope a route needs.
SCOPE = "scope"
#: Route option for routes anyone may call (health, readiness, metrics, the dashboard's login).
PUBLIC = "exclude_from_auth"
#: The dashboard keeps the key it was given in this HttpOnly, SameSite=Strict cookie.
KEY_COOKIE = "skiplock_key"
#: Browsers cannot set headers on a websocket: ``new WebSocket(url, ["bearer", key])`` sends the key.
BEARER_PROTOCOL = "bearer"
CSRF_COOKIE = "csrftoken"
CSRF_HEADER = "x-csrftoken"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PUBLIC_PATHS = [r"^/schema", r"^/ui/static/"]


def needs(scope: Scope) -> dict[str, Any]:
    """``opt=needs(Scope.JOBS_WRITE)`` on a route or controller."""
    return {SCOPE: scope.value}


PUBLIC_ROUTE: dict[str, Any] = {PUBLIC: True}


@dataclass
class AuthState:
    """Decided at start (see skiplock.auth.decide_auth); kept in ``app.state.auth``."""

    mode: AuthMode
    keys: KeyStore
    tokens: TokenVerifier | None = None

    async def verify(self, credential: str) -> Principal | None:
        """An API key (``sk_…``) or, when configured, a JWT."""
        if credential.startswith(KEY_PREFIX) or self.tokens is None:
            return await self.keys.verify(credential)
        return await self.tokens.verify(credential)


def _token(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[str | None, bool]:
    """The presented key and whether it came from the dashboard's cookie."""
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    if connection.scope["type"] == ScopeType.WEBSOCKET:
        protocols = [p.strip() for p in connection.headers.get("sec-websocket-protocol", "").split(",")]
        if len(protocols) >= 2 and protocols[0] == BEARER_PROTOCOL and protocols[1]:
            return protocols[1], False
    # Browsers cannot set headers on websockets and EventSource: a query token, for reads only.
    is_read = connection.scope["type"] == ScopeType.WEBSOCKET or connection.scope.get("method") in (
        "GET",
        "HEAD",
    )
    if is_read and connection.query_params.get("token"):
        return connection.query_params["token"], False
    cookie = connection.cookies.get(KEY_COOKIE)
    return (cookie, True) if cookie else (None, False)


class KeyAuthMiddleware(AbstractAuthenticationMiddleware):
    """Sets ``connection.user`` to the key's Principal (everyone is ANONYMOUS with every scope when
    the service runs open). 401 for a missing or unknown key."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        state: AuthState = connection.app.state.auth
        if state.mode is AuthMode.OPEN:
            return AuthenticationResult(user=ANONYMOUS, auth=None)
        token, from_cookie = _token(connection)
        if token is None:
            raise NotAuthorizedException("an API key is required: send it as 'Authorization: Bearer <key>'")
        principal = await state.verify(token)
        if principal is None:
            raise NotAuthorizedException("unknown or revoked API key, or an invalid token")
        if from_cookie and connection.scope.get("method") in _UNSAFE:
            # The cookie goes with every same-site request: a write must also prove it came from the
            # dashboard's own script, which echoes the CSRF cookie in a header (double submit).
            sent, expected = connection.headers.get(CSRF_HEADER, ""), connection.cookies.get(CSRF_COOKIE, "")
            if not (sent and expected and compare_digest(sent, expected)):
                raise PermissionDeniedException("missing or wrong CSRF token")
        return AuthenticationResult(user=principal, auth=token)


def auth_middleware() -> DefineMiddleware:
    return DefineMiddleware(KeyAuthMiddleware, exclude=_PUBLIC_PATHS, exclude_from_auth_key=PUBLIC)


async def scope_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """403 unless the caller's key has the route's scope. A route that declares none needs admin.

    A coroutine: Litestar runs a plain function guard in a worker thread, a hop per request."""
    principal: Principal | None = connection.scope.get("user")
    if handler.opt.get(PUBLIC) or principal is None:  # a public route, or a path auth skips (/schema)
        return
    needed = Scope(handler.opt.get(SCOPE, Scope.ADMIN.value))
    if not principal.allows(needed):
        raise PermissionDeniedException(f"this key lacks the {needed.value!r} scope", extra={"scope": needed})


def csrf_config(api_paths: Iterable[str]) -> CSRFConfig:
    """Litestar's CSRF protection for the dashboard's own forms (login, logout); the JSON API under
    ``api_paths`` is checked by KeyAuthMiddleware instead. Its secret is the installation's, read
    at start (the plugin sets it), so every replica accepts every token."""
    prefixes = sorted({"/" + path.strip("/").split("/")[0] for path in api_paths})
    return CSRFConfig(
        secret="set-at-start",
        cookie_name=CSRF_COOKIE,
        header_name=CSRF_HEADER,
        cookie_samesite="strict",
        exclude=[f"^{re.escape(prefix)}(/|$)" for prefix in prefixes],
    )
