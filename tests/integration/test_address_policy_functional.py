"""The address policy on real connections: literal hosts, resolved names, rebinding, redirects."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import aiohttp
import pytest
from aiohttp import ClientMiddlewareType
from aiohttp.abc import AbstractResolver
from aiohttp.connector import AddrInfoType

from service.config import Settings
from service.net.address_policy import (
    ADDRESS_NOT_ALLOWED,
    AddressPolicy,
    GuardedResolver,
    destination_guard,
    guarded_socket_factory,
)
from service.net.downloader import Downloader, FetchError, create_client_session
from tests.support.fault_host import FaultHost
from tests.support.fetchers import fetch_retrying
from tests.support.image_host import ImageHost
from tests.support.resolvers import StubResolver
from tests.support.special_addresses import SPECIAL_ADDRESSES

MakeDownloader = Callable[..., Downloader]
SocketFactory: TypeAlias = Callable[[AddrInfoType], socket.socket]

# Standing in for a public address: the rest of loopback stays refused.
PUBLIC_STAND_IN = ipaddress.ip_network("127.0.0.2/32")


@pytest.fixture
async def make_downloader(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[MakeDownloader]:
    sessions = []

    def make(
        policy: AddressPolicy | None = None, resolver: Any = None, **overrides: Any
    ) -> Downloader:
        settings = make_settings(**overrides)
        session = create_client_session(settings.download, policy=policy, resolver=resolver)
        sessions.append(session)
        return Downloader(session, settings.download)

    yield make
    for session in sessions:
        await session.close()


@pytest.fixture
async def stand_in_host() -> AsyncIterator[FaultHost]:
    try:
        host = await FaultHost("127.0.0.2").start()
    except OSError:
        pytest.skip("127.0.0.2 is not routable to loopback here")
    yield host
    await host.close()


async def reason_for(downloader: Downloader, url: str) -> str:
    with pytest.raises(FetchError) as caught:
        await fetch_retrying(downloader, url)
    return caught.value.reason


# What a loopback host spelled each way gives with private networks allowed:
# aiohttp refuses the legacy numeric forms it recognises as IPv4 itself.
ALLOWED_OUTCOME = {
    "127.0.0.1": "ok",
    "localhost": "ok",
    "[::ffff:127.0.0.1]": "ok",
    "0x7f.1": "ok",
    "2130706433": "invalid URL",
    "127.1": "invalid URL",
}


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("host", list(ALLOWED_OUTCOME))
async def test_loopback_spellings(
    make_downloader: MakeDownloader, image_host: ImageHost, host: str, allow_private: bool
) -> None:
    downloader = make_downloader(allow_private_networks=allow_private, retry_attempts=1)
    url = f"http://{host}:{image_host.server.port}/img/4x4.png"
    if not allow_private:
        assert await reason_for(downloader, url) == ADDRESS_NOT_ALLOWED
        assert image_host.requests == []
    elif ALLOWED_OUTCOME[host] == "ok":
        assert await fetch_retrying(downloader, url)
        assert image_host.requests == ["/img/4x4.png"]
    else:
        assert (await reason_for(downloader, url)).startswith("invalid URL")


async def test_dns_rebinding_to_the_metadata_address_is_refused(
    make_downloader: MakeDownloader, image_host: ImageHost, fault_host: FaultHost
) -> None:
    # The name first resolves to an allowed address, then (TTL over) to 169.254.169.254.
    resolver = StubResolver(["127.0.0.1"], ["169.254.169.254"])
    policy = AddressPolicy(exempt_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    downloader = make_downloader(policy=policy, resolver=resolver, retry_attempts=1)

    assert await fetch_retrying(
        downloader, f"http://images.test:{image_host.server.port}/img/4x4.png"
    )
    # A new connection (another port) resolves again and gets the rebound answer.
    reason = await reason_for(downloader, f"http://images.test:{fault_host.port}/img")
    assert reason == ADDRESS_NOT_ALLOWED
    assert resolver.calls == 2
    assert fault_host.requests == []


async def test_redirect_to_loopback_from_an_allowed_host_is_refused(
    make_downloader: MakeDownloader, image_host: ImageHost, stand_in_host: FaultHost
) -> None:
    downloader = make_downloader(policy=AddressPolicy(exempt_networks=(PUBLIC_STAND_IN,)))
    target = image_host.url("/img/4x4.png")

    # The allowed host serves directly...
    assert await fetch_retrying(downloader, stand_in_host.url("/img"))
    # ...but its redirect to 127.0.0.1 is checked on the hop and never connected.
    reason = await reason_for(downloader, stand_in_host.url(f"/redirect-to?url={target}"))
    assert reason == ADDRESS_NOT_ALLOWED
    assert image_host.requests == []


async def test_redirect_to_a_host_outside_allowed_hosts_is_refused(
    make_downloader: MakeDownloader, image_host: ImageHost
) -> None:
    downloader = make_downloader(allowed_hosts=("127.0.0.1",))
    target = image_host.url("/img/4x4.png").replace("127.0.0.1", "localhost")
    assert await fetch_retrying(downloader, image_host.url("/img/4x4.png"))
    reason = await reason_for(downloader, image_host.url(f"/redirect-to?url={target}"))
    assert reason == "destination host not allowed"


def test_socket_gate_refuses_what_the_resolver_never_saw() -> None:
    create = guarded_socket_factory(AddressPolicy())
    with pytest.raises(OSError, match=ADDRESS_NOT_ALLOWED):
        create((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80)))
    sock = create((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)))
    sock.close()


def tripwire(gate: Callable[[AddrInfoType], socket.socket] | None = None) -> SocketFactory:
    """A socket factory that never connects: it asks ``gate`` (if any), then refuses anyway.

    Behind a gate under test it proves the refusal came from the gate; standing in
    for the socket gate it proves an earlier gate refused before any socket.
    """

    def create(addr_info: AddrInfoType) -> socket.socket:
        if gate is not None:
            gate(addr_info).close()
        raise OSError(f"tripwire: a socket to {addr_info[4][0]} was allowed")

    return create


def session_with(
    *,
    resolver: AbstractResolver | None = None,
    socket_factory: SocketFactory,
    middlewares: tuple[ClientMiddlewareType, ...] = (),
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=resolver, socket_factory=socket_factory)
    return aiohttp.ClientSession(connector=connector, middlewares=middlewares)


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize(("address", "entry"), SPECIAL_ADDRESSES)
async def test_a_name_resolving_to_a_special_address_is_refused_by_the_resolver(
    make_settings: Callable[..., Settings], address: str, entry: str
) -> None:
    policy = AddressPolicy()
    resolver = GuardedResolver(policy, StubResolver([address]))
    async with session_with(resolver=resolver, socket_factory=tripwire()) as session:
        downloader = Downloader(session, make_settings(retry_attempts=1).download)
        assert await reason_for(downloader, "http://images.test/x.jpg") == ADDRESS_NOT_ALLOWED


@pytest.mark.parametrize(("address", "entry"), SPECIAL_ADDRESSES)
async def test_a_name_resolving_to_a_special_address_is_refused_by_the_socket_gate(
    make_settings: Callable[..., Settings], address: str, entry: str
) -> None:
    # The resolver is not guarded here: the socket gate alone must refuse.
    gate = tripwire(guarded_socket_factory(AddressPolicy()))
    async with session_with(resolver=StubResolver([address]), socket_factory=gate) as session:
        downloader = Downloader(session, make_settings(retry_attempts=1).download)
        assert await reason_for(downloader, "http://images.test/x.jpg") == ADDRESS_NOT_ALLOWED


@pytest.mark.parametrize(("address", "entry"), SPECIAL_ADDRESSES)
async def test_a_special_address_literal_in_a_url_is_refused_by_the_destination_guard(
    make_settings: Callable[..., Settings], address: str, entry: str
) -> None:
    guard = destination_guard(AddressPolicy())
    async with session_with(socket_factory=tripwire(), middlewares=(guard,)) as session:
        downloader = Downloader(session, make_settings(retry_attempts=1).download)
        url = f"http://{url_host(address)}/x.jpg"
        assert await reason_for(downloader, url) == ADDRESS_NOT_ALLOWED
