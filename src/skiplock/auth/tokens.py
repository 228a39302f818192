"""Optional JWT bearer tokens from an identity provider: signature (a shared secret, or the
provider's JWKS), expiry, audience and issuer checked; scopes read from a claim."""

from __future__ import annotations

import asyncio
from typing import Any

from skiplock._extras import require
from skiplock.auth.keys import Principal, Scope
from skiplock.settings import Settings

_HMAC = ["HS256", "HS384", "HS512"]
_PUBLIC_KEY = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class TokenVerifier:
    """Checks tokens against ``SKIPLOCK_JWT_SECRET`` or the keys at ``SKIPLOCK_JWT_JWKS_URL``."""

    def __init__(self, settings: Settings) -> None:
        require("jwt", "SKIPLOCK_JWT_SECRET / SKIPLOCK_JWT_JWKS_URL (JWT bearer tokens)")
        import jwt  # the optional extra, installed: require said so

        self.secret = settings.jwt_secret
        self.jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True) if settings.jwt_jwks_url else None
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.claim = settings.jwt_scopes_claim

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        return cls(settings) if settings.jwt_enabled else None

    async def verify(self, token: str) -> Principal | None:
        """The token's principal, or None when the signature, expiry, audience or issuer is wrong."""
        import jwt

        try:
            if self.jwks is not None:  # fetching the key set blocks: not on the event loop
                key: Any = (await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)).key
                algorithms = _PUBLIC_KEY
            else:
                key, algorithms = self.secret, _HMAC
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except (jwt.PyJWTError, OSError):
            return None
        return Principal(str(claims.get("sub") or "jwt"), self._scopes(claims.get(self.claim)))

    @staticmethod
    def _scopes(value: object) -> frozenset[Scope]:
        """``"jobs:read jobs:write"`` (OAuth's ``scope``) or a list; names skiplock does not know are
        ignored (an identity provider issues scopes for other services too)."""
        names = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
        known = {scope.value for scope in Scope}
        return frozenset(Scope(name) for name in names if name in known)
