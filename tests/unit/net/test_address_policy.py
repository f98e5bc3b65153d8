"""The SSRF policy on its own: address forms x allow_private_networks, spellings, allow-list."""

from __future__ import annotations

import ipaddress

import pytest

from service.net.address_policy import (
    ADDRESS_NOT_ALLOWED,
    HOST_NOT_ALLOWED,
    AddressPolicy,
    DestinationNotAllowed,
    GuardedResolver,
    host_address,
    is_public_address,
)
from tests.support.resolvers import StubResolver
from tests.support.special_addresses import PUBLIC_NEIGHBOURS, SPECIAL_ADDRESSES

# (URL host as written, allowed when private networks are blocked?)
HOSTS = [
    ("127.0.0.1", False),  # loopback
    ("127.254.0.9", False),
    ("::1", False),
    ("0.0.0.0", False),  # unspecified
    ("::", False),
    ("10.1.2.3", False),  # private
    ("172.16.0.1", False),
    ("172.31.255.255", False),
    ("192.168.1.1", False),
    ("fd00::1", False),  # unique local
    ("169.254.169.254", False),  # link-local: cloud metadata
    ("fe80::1", False),
    ("fe80::1%25eth0", False),  # with a zone id, as a URL spells it
    ("100.64.0.1", False),  # CGNAT
    ("224.0.0.1", False),  # multicast
    ("239.255.255.250", False),
    ("ff02::1", False),
    ("ff0e::1", False),
    ("240.0.0.1", False),  # reserved
    ("255.255.255.255", False),
    ("192.0.2.10", False),  # documentation
    ("198.51.100.7", False),
    ("203.0.113.5", False),
    ("2001:db8::1", False),
    ("198.18.0.1", False),  # benchmarking
    ("::ffff:127.0.0.1", False),  # IPv4-mapped
    ("::ffff:7f00:1", False),
    ("::ffff:169.254.169.254", False),
    ("::127.0.0.1", False),  # IPv4-compatible (deprecated)
    ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
    ("64:ff9b::7f00:1", False),
    ("64:ff9b:1::1", False),  # local-use NAT64
    ("2002:a9fe:a9fe::", False),  # 6to4 of 169.254.169.254
    ("2002:7f00:1::1", False),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ("2130706433", False),  # decimal 127.0.0.1
    ("0x7f.1", False),  # hex and short forms
    ("0x7f000001", False),
    ("017700000001", False),  # octal
    ("0177.0.0.1", False),
    ("127.1", False),
    ("0", False),
    ("127.0.0.1.", False),  # trailing dot
    ("8.8.8.8", True),  # public
    ("1.1.1.1", True),
    ("93.184.216.34", True),
    ("2606:4700:4700::1111", True),
    ("::ffff:8.8.8.8", True),  # mapped public
    ("64:ff9b::808:808", True),  # NAT64 of a public address
    ("2002:808:808::1", True),  # 6to4 of a public address
    ("134744072", True),  # decimal 8.8.8.8
]


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(("host", "public"), HOSTS)
def test_address_forms(host: str, public: bool, allow_private: bool) -> None:
    policy = AddressPolicy(allow_private_networks=allow_private)
    if public or allow_private:
        policy.check_host(host)
    else:
        with pytest.raises(DestinationNotAllowed) as refused:
            policy.check_host(host)
        assert refused.value.reason == ADDRESS_NOT_ALLOWED


@pytest.mark.parametrize(("address", "entry"), SPECIAL_ADDRESSES)
def test_every_special_purpose_range_is_refused(address: str, entry: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address)), entry
    with pytest.raises(DestinationNotAllowed) as refused:
        AddressPolicy().check_host(f"[{address}]" if ":" in address else address)
    assert refused.value.reason == ADDRESS_NOT_ALLOWED
    AddressPolicy(allow_private_networks=True).check_host(address)


@pytest.mark.parametrize("address", PUBLIC_NEIGHBOURS)
def test_public_addresses_next_to_the_refused_ranges_pass(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))
    AddressPolicy().check_host(f"[{address}]" if ":" in address else address)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("images.example.com", None),
        ("0xcafe.example", None),
        ("1.2.3.4.5", None),
    ],
)
def test_host_address_reads_every_ip_spelling(host: str, address: str | None) -> None:
    expected = ipaddress.ip_address(address) if address else None
    assert host_address(host) == expected


def test_exempt_networks_count_as_public_and_nothing_else() -> None:
    policy = AddressPolicy(exempt_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    assert policy.address_allowed("127.0.0.2")
    assert not policy.address_allowed("127.0.0.1")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("images.example.com", True),
        ("IMAGES.Example.com.", True),
        ("cdn.images.example.com", True),
        ("example.com", False),
        ("evilimages.example.com", False),
        ("images.example.com.evil.net", False),
        ("static.example.net", True),
        ("8.8.8.8", False),
    ],
)
def test_allowed_hosts_admits_listed_hosts_and_their_subdomains(host: str, allowed: bool) -> None:
    policy = AddressPolicy(allowed_hosts=("images.example.com", "example.net"))
    if allowed:
        policy.check_host(host)
    else:
        with pytest.raises(DestinationNotAllowed) as refused:
            policy.check_host(host)
        assert refused.value.reason == HOST_NOT_ALLOWED


def test_allowed_hosts_does_not_lift_the_address_check() -> None:
    policy = AddressPolicy(allowed_hosts=("127.0.0.1",))
    with pytest.raises(DestinationNotAllowed) as refused:
        policy.check_host("127.0.0.1")
    assert refused.value.reason == ADDRESS_NOT_ALLOWED


async def test_resolver_filters_each_lookup_so_rebinding_is_caught() -> None:
    inner = StubResolver(["93.184.216.34"], ["169.254.169.254"])
    resolver = GuardedResolver(AddressPolicy(), inner)

    first = await resolver.resolve("images.example.com", 80)
    assert [result["host"] for result in first] == ["93.184.216.34"]
    with pytest.raises(DestinationNotAllowed) as refused:
        await resolver.resolve("images.example.com", 80)
    assert refused.value.reason == ADDRESS_NOT_ALLOWED


async def test_resolver_keeps_only_the_allowed_addresses_of_a_mixed_answer() -> None:
    inner = StubResolver(["10.0.0.5", "93.184.216.34", "::1", "2606:4700:4700::1111"])
    results = await GuardedResolver(AddressPolicy(), inner).resolve("mixed.example.com", 443)
    assert [result["host"] for result in results] == ["93.184.216.34", "2606:4700:4700::1111"]


async def test_resolver_passes_everything_when_private_networks_are_allowed() -> None:
    inner = StubResolver(["127.0.0.1"])
    policy = AddressPolicy(allow_private_networks=True)
    results = await GuardedResolver(policy, inner).resolve("localhost", 80)
    assert [result["host"] for result in results] == ["127.0.0.1"]
