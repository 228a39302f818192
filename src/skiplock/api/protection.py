"""What every request passes through besides auth: CORS, compression and the rate limit, each
Litestar's own, configured from settings."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.middleware.rate_limit import CacheObject, DurationUnit, RateLimitConfig, RateLimitMiddleware

from skiplock.auth import ANONYMOUS, Principal
from skiplock.settings import Settings

#: Never limited: probes and scrapers must always get through.
UNLIMITED = [r"^/health$", r"^/ready$", r"^/metrics$", r"^/ui/static/"]


def cors(settings: Settings) -> CORSConfig | None:
    """Nothing is allowed cross-origin unless SKIPLOCK_CORS_ORIGINS names it."""
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["authorization", "content-type", "x-request-id"],
        expose_headers=["x-request-id", "retry-after"],
        max_age=600,
    )


def compression() -> CompressionConfig:
    """Brotli where the client takes it, else gzip, for responses over 1 KiB; never the event
    stream, which a compressor would hold back until its buffer fills."""
    return CompressionConfig(
        backend="brotli", brotli_gzip_fallback=True, minimum_size=1024, exclude=[r"/stream$"]
    )


class _RetryAfter(RateLimitMiddleware):
    """Litestar's limiter, with Retry-After on a 429 (it sends only the RateLimit-* draft headers)."""

    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        headers = super().create_response_headers(cache_object)
        if cache_object.history and len(cache_object.history) >= self.max_requests:
            headers["Retry-After"] = str(max(1, int(headers[self.config.rate_limit_reset_header_key])))
        return headers


def caller(request: Request[Any, Any, Any]) -> str:
    """Whose budget a request spends: its verified key's (the limiter runs after auth, so a made-up
    token cannot buy a fresh budget), or else its client address's."""
    principal = request.scope.get("user")
    if isinstance(principal, Principal) and principal is not ANONYMOUS:
        return f"key:{principal.key_id or principal.name}"
    return "addr:" + (request.client.host if request.client else "unknown")


def rate_limit(settings: Settings) -> RateLimitConfig | None:
    """SKIPLOCK_RATE_LIMIT (``1000/second``) per caller and process; None when ``off``."""
    if settings.rate_limit == "off":
        return None
    count, _, unit = settings.rate_limit.partition("/")
    duration: DurationUnit = unit  # type: ignore[assignment]  # the setting's pattern allows only these
    return RateLimitConfig(
        rate_limit=(duration, int(count)),
        exclude=UNLIMITED,
        identifier_for_request=caller,
        middleware_class=_RetryAfter,
    )
