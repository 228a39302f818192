"""Safe by default: open only on a loopback address with no keys, unless told otherwise."""

from __future__ import annotations

import enum
import ipaddress

from skiplock.auth.keys import KeyStore
from skiplock.errors import ConfigError
from skiplock.settings import Settings


class AuthMode(enum.StrEnum):
    OPEN = "open"  # every request may do everything
    KEYS = "keys"  # every request (but health, readiness and metrics) needs a key with the scope


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def decide_auth(setting: str, host: str, live_keys: int) -> AuthMode:
    """``SKIPLOCK_AUTH`` (auto/on/off), the bind address and how many keys exist (a configured JWT
    issuer counts as one) → the mode.

    auto: keys are required once any exists; with none, only a loopback bind may run open, and any
    other bind refuses to start (ConfigError) rather than serve the world without a key.
    """
    if setting == "off":
        return AuthMode.OPEN
    if setting == "on" or live_keys > 0:
        return AuthMode.KEYS
    if is_loopback(host):
        return AuthMode.OPEN
    raise ConfigError(
        f"refusing to serve on {host} without API keys: create one with `skiplock keys create"
        " --name NAME --scopes admin`, or set SKIPLOCK_AUTH=off to run open on purpose"
    )


async def decide_for(settings: Settings, keys: KeyStore) -> AuthMode:
    """The mode for this process: its settings, and the live keys (a JWT issuer counts as one)."""
    credentials = await keys.live_count() + (1 if settings.jwt_enabled else 0)
    return decide_auth(settings.auth, settings.host, credentials)
