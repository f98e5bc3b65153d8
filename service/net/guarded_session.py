"""Client sessions whose every connection passes the address policy, on every hop.

Image downloads and webhook deliveries each have a session of their own (their
pools, limits and headers differ), but both are built here, so the three gates
(the guarded resolver, the socket gate, the per-request destination guard) and
the other defences cannot drift apart between them.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from aiohttp.abc import AbstractResolver

from service.config import DownloadSettings
from service.net.address_policy import (
    AddressPolicy,
    GuardedResolver,
    destination_guard,
    guarded_socket_factory,
)

__all__ = ["address_policy_from", "guarded_session"]


def address_policy_from(settings: DownloadSettings) -> AddressPolicy:
    return AddressPolicy(
        allow_private_networks=settings.allow_private_networks,
        allowed_hosts=tuple(host.lower().rstrip(".") for host in settings.allowed_hosts),
    )


def guarded_session(
    settings: DownloadSettings,
    *,
    limit: int,
    headers: Mapping[str, str],
    dns_cache_seconds: int,
    policy: AddressPolicy | None = None,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """A session of at most ``limit`` connections, each one checked against the policy.

    ``policy`` and ``resolver`` (the one the guard wraps) are for tests.
    """
    policy = policy if policy is not None else address_policy_from(settings)
    connector = aiohttp.TCPConnector(
        limit=limit,
        ttl_dns_cache=dns_cache_seconds,
        resolver=GuardedResolver(policy, resolver),
        # aiohttp skips the resolver for IP-literal hosts; this checks every socket.
        socket_factory=guarded_socket_factory(policy),
    )
    timeout = aiohttp.ClientTimeout(
        total=settings.total_timeout,
        connect=settings.connect_timeout,
        # sock_read bounds the gap between chunks, so a host trickling bytes stalls out.
        sock_read=settings.read_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers=dict(headers),
        raise_for_status=False,
        # One session serves every client: a cookie one host sets must not ride
        # along on later requests made for another.
        cookie_jar=aiohttp.DummyCookieJar(),
        middlewares=(destination_guard(policy),),
    )
