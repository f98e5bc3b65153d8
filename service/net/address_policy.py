"""Where downloads may connect: the SSRF policy and the resolver, socket and hop gates enforcing it.

The policy is a plain object, testable on its own. Three gates apply it:
``GuardedResolver`` filters what DNS returns (so a name that re-resolves to an
internal address between checks never gets through: the connection uses the
filtered list), ``guarded_socket_factory`` checks the address of every socket
the connector opens (aiohttp skips the resolver for IP-literal hosts), and
``destination_guard`` is a client middleware that runs before every redirect
hop to check the scheme, ``allowed_hosts`` and numeric host spellings.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import unquote

from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType
from aiohttp.resolver import DefaultResolver

from service.outcomes import FailureKind

__all__ = [
    "ADDRESS_NOT_ALLOWED",
    "HOST_NOT_ALLOWED",
    "AddressPolicy",
    "DestinationNotAllowed",
    "GuardedResolver",
    "destination_guard",
    "guarded_socket_factory",
    "host_address",
    "is_public_address",
    "refusal_behind",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

ADDRESS_NOT_ALLOWED = "destination address not allowed"
HOST_NOT_ALLOWED = "destination host not allowed"
ALLOWED_SCHEMES = frozenset({"http", "https"})


def _networks(*specs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(spec) for spec in specs)


# The IANA IPv4 and IPv6 special-purpose address registries, entry by entry, listed
# rather than trusting ``is_global``, whose answers differ between Python patch
# releases (3.11.7 calls ::7f00:1 global). Entries the registry calls globally
# reachable are blocked too: they are anycast services (AS112, AMT, PCP, TURN) that
# reach whichever instance is nearest, possibly one inside our own network, and no
# image lives there.
_BLOCKED_V4 = _networks(
    "0.0.0.0/8",  # "this network", includes the unspecified address
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # carrier-grade NAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, includes the cloud metadata endpoint
    "172.16.0.0/12",  # private
    # IETF protocol assignments: DS-Lite, dummy, PCP and TURN anycast, NAT64 discovery.
    "192.0.0.0/24",
    "192.0.2.0/24",  # documentation (TEST-NET-1)
    "192.31.196.0/24",  # AS112-v4 anycast DNS sink
    "192.52.193.0/24",  # AMT relay anycast
    "192.88.99.0/24",  # deprecated 6to4 relay anycast, and the 6a44 relay
    "192.168.0.0/16",  # private
    "192.175.48.0/24",  # AS112 direct delegation
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",  # documentation (TEST-NET-3)
    "224.0.0.0/4",  # multicast (its own registry)
    "240.0.0.0/4",  # reserved, includes the limited broadcast address
)
# Only 2000::/3 is allocated for global unicast; the rest of the IPv6 space is
# reserved or special, so an address outside it (other than the IPv4-embedding forms
# below) is refused whether or not a registry entry names it. That covers the
# unspecified and loopback addresses (::/96), local-use NAT64 (64:ff9b:1::/48),
# discard-only (100::/64), the dummy prefix (100:0:0:1::/64), segment routing
# (5f00::/16), unique local (fc00::/7), link-local (fe80::/10), deprecated
# site-local (fec0::/10) and multicast (ff00::/8).
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
# The registry's entries inside 2000::/3.
_BLOCKED_V6 = _networks(
    # IETF protocol assignments: Teredo, PCP, TURN and DNS-SD anycast, benchmarking,
    # AMT, AS112-v6, ORCHID and ORCHIDv2, drone remote ID tags.
    "2001::/23",
    "2001:db8::/32",  # documentation
    "2620:4f:8000::/48",  # AS112 direct delegation
    "3fff::/20",  # documentation
)
# IPv6 forms that carry an IPv4 address in their last 32 bits: judged by that
# address. (IPv4-mapped ::ffff:0:0/96 and 6to4 2002::/16 are read by ipaddress.)
_IPV4_EMBEDDING = _networks(
    "64:ff9b::/96",  # NAT64 well-known prefix
    "::ffff:0:0:0/96",  # SIIT IPv4-translated
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")

# Host spellings that inet_aton (and so getaddrinfo) reads as IPv4: 2130706433,
# 0x7f.1, 0177.0.0.1, 127.1.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _IPV4_EMBEDDING) or (
        address in _IPV4_COMPATIBLE and int(address) > 1
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(address: IPAddress) -> bool:
    """True unless the address is internal, special-purpose or embeds one that is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
        if address.teredo is not None or address not in _GLOBAL_UNICAST_V6:
            return False
        return not any(address in network for network in _BLOCKED_V6)
    return not any(address in network for network in _BLOCKED_V4)


def host_address(host: str) -> IPAddress | None:
    """The IP address a URL host denotes, including legacy numeric IPv4 spellings; else None."""
    text = unquote(host).strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


class DestinationNotAllowed(OSError):
    """The policy refused a destination.

    An ``OSError`` so that aiohttp keeps it as the cause of the connection error
    it raises; the downloader looks for it in the cause chain.
    """

    def __init__(
        self, reason: str, target: object, kind: FailureKind = FailureKind.REFUSED_ADDRESS
    ) -> None:
        super().__init__(f"{reason}: {target}")
        self.reason = reason
        self.kind = kind


def refusal_behind(exc: BaseException) -> DestinationNotAllowed | None:
    """The policy refusal behind an aiohttp error, however deeply aiohttp wrapped it."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DestinationNotAllowed):
            return current
        pending += [current.__cause__, current.__context__, getattr(current, "os_error", None)]
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which hosts and addresses downloads may reach.

    ``exempt_networks`` are treated as public; tests use it to stand a loopback
    server in for a public one while the rest of loopback stays refused.
    """

    allow_private_networks: bool = False
    allowed_hosts: tuple[str, ...] = ()
    exempt_networks: tuple[IPNetwork, ...] = ()

    def address_allowed(self, address: IPAddress | str) -> bool:
        if self.allow_private_networks:
            return True
        if isinstance(address, str):
            try:
                address = ipaddress.ip_address(address)
            except ValueError:
                return False
        if any(address in network for network in self.exempt_networks):
            return True
        return is_public_address(address)

    def check_address(self, address: IPAddress | str) -> None:
        if not self.address_allowed(address):
            raise DestinationNotAllowed(ADDRESS_NOT_ALLOWED, address)

    def host_allowed(self, host: str) -> bool:
        """Whether ``allowed_hosts`` (if set) lists the host or a parent domain of it."""
        if not self.allowed_hosts:
            return True
        name = host.lower().rstrip(".")
        return any(name == entry or name.endswith("." + entry) for entry in self.allowed_hosts)

    def check_host(self, host: str) -> None:
        """Check a URL's host before connecting: the allow-list, then IP spellings."""
        refusal = _host_refusal(self, host)
        if refusal is not None:
            raise DestinationNotAllowed(*refusal)


# The verdict depends on the host text alone (no DNS), and a job's thousands of
# URLs share a handful of hosts: this runs on every hop of every download.
@functools.lru_cache(maxsize=4096)
def _host_refusal(policy: AddressPolicy, host: str) -> tuple[str, object] | None:
    if not policy.host_allowed(host):
        return HOST_NOT_ALLOWED, host
    address = host_address(host)
    if address is not None and not policy.address_allowed(address):
        return ADDRESS_NOT_ALLOWED, address
    return None


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and drops the addresses the policy refuses."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [result for result in results if self._policy.address_allowed(result["host"])]
        if not allowed:
            raise DestinationNotAllowed(ADDRESS_NOT_ALLOWED, host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(policy: AddressPolicy) -> Callable[[AddrInfoType], socket.socket]:
    """A connector socket factory that refuses to open a socket to a refused address."""

    def create(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        policy.check_address(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)

    return create


def destination_guard(policy: AddressPolicy) -> ClientMiddlewareType:
    """A client middleware: aiohttp runs it before the first request and every redirect hop."""

    async def guard(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        if request.url.scheme not in ALLOWED_SCHEMES:
            raise DestinationNotAllowed(
                "unsupported URL scheme", request.url.scheme, FailureKind.REDIRECT_REFUSED
            )
        policy.check_host(request.url.raw_host or "")
        return await handler(request)

    return guard
