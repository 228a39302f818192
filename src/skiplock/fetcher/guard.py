"""Which addresses a fetch may reach: public ones, unless the policy says otherwise.

The check runs on the addresses a name resolves to, inside the resolver aiohttp connects with, so
what is checked is what is connected to (a name cannot resolve to a public address for the check
and a private one for the connection). IP literals never reach a resolver: the fetcher checks
those itself on every hop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from skiplock.errors import FetchRefusedError
from skiplock.settings import Settings

MAX_REDIRECTS = 5
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def why_blocked(address: Address) -> str | None:
    """The reason a fetch may not reach ``address``, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    # is_global is False for private, shared (100.64/10), reserved and documentation ranges too.
    if not address.is_global:
        return "a private or reserved address"
    return None


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """The limits every fetch runs under."""

    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = MAX_REDIRECTS
    allow_private: bool = False
    allow_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(
            max_bytes=settings.fetch_max_bytes,
            allow_private=settings.fetch_allow_private,
            allow_hosts=frozenset(host.lower().strip("[]") for host in settings.fetch_allow_hosts),
        )

    def trusts(self, host: str) -> bool:
        """True when ``host`` may resolve to anything (private addresses allowed, or allow-listed)."""
        return self.allow_private or host.lower().strip("[]") in self.allow_hosts

    def check_addresses(self, host: str, addresses: Iterable[str]) -> None:
        """Raise FetchRefusedError if ``host`` is not trusted and any of its addresses is blocked."""
        if self.trusts(host):
            return
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
            reason = why_blocked(address)
            if reason is not None:
                raise FetchRefusedError(
                    f"refused to fetch from {host}: {address} is {reason}"
                    " (SKIPLOCK_FETCH_ALLOW_PRIVATE or SKIPLOCK_FETCH_ALLOW_HOSTS allow it)",
                    host=host,
                    address=str(address),
                )

    def check_literal(self, host: str) -> None:
        """Check a URL host that is an IP literal (names are checked by the resolver)."""
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        self.check_addresses(host, [host.strip("[]")])


class GuardedResolver(AbstractResolver):
    """aiohttp's default resolver, refusing names that resolve to addresses the policy blocks."""

    def __init__(self, policy: FetchPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        self.policy.check_addresses(host, [result["host"] for result in results])
        return results

    async def close(self) -> None:
        await self.inner.close()
