"""An address from every special-purpose range the SSRF policy refuses, for its tests.

One or more per entry of the IANA IPv4 and IPv6 special-purpose address registries,
plus the ranges outside them that the policy also refuses (multicast, the rest of
the IPv6 space outside 2000::/3, and IPv6 forms that embed a refused IPv4 address).
"""

from __future__ import annotations

__all__ = ["PUBLIC_NEIGHBOURS", "SPECIAL_ADDRESSES"]

# (address, the range it stands for)
SPECIAL_ADDRESSES: list[tuple[str, str]] = [
    # IPv4 special-purpose registry
    ("0.0.0.0", "0.0.0.0/32 this host on this network"),
    ("0.1.2.3", "0.0.0.0/8 this network"),
    ("10.20.30.40", "10.0.0.0/8 private"),
    ("100.127.255.254", "100.64.0.0/10 shared address space"),
    ("127.0.0.1", "127.0.0.0/8 loopback"),
    ("169.254.169.254", "169.254.0.0/16 link-local"),
    ("172.31.0.1", "172.16.0.0/12 private"),
    ("192.0.0.1", "192.0.0.0/29 IPv4 service continuity (DS-Lite)"),
    ("192.0.0.8", "192.0.0.8/32 IPv4 dummy address"),
    ("192.0.0.9", "192.0.0.9/32 PCP anycast"),
    ("192.0.0.10", "192.0.0.10/32 TURN anycast"),
    ("192.0.0.170", "192.0.0.170/32 NAT64/DNS64 discovery"),
    ("192.0.0.171", "192.0.0.171/32 NAT64/DNS64 discovery"),
    ("192.0.0.200", "192.0.0.0/24 IETF protocol assignments"),
    ("192.0.2.1", "192.0.2.0/24 documentation (TEST-NET-1)"),
    ("192.31.196.1", "192.31.196.0/24 AS112-v4"),
    ("192.52.193.1", "192.52.193.0/24 AMT"),
    ("192.88.99.1", "192.88.99.0/24 deprecated 6to4 relay anycast"),
    ("192.88.99.2", "192.88.99.2/32 6a44 relay anycast"),
    ("192.168.1.1", "192.168.0.0/16 private"),
    ("192.175.48.6", "192.175.48.0/24 AS112 direct delegation"),
    ("198.19.255.255", "198.18.0.0/15 benchmarking"),
    ("198.51.100.1", "198.51.100.0/24 documentation (TEST-NET-2)"),
    ("203.0.113.1", "203.0.113.0/24 documentation (TEST-NET-3)"),
    ("240.0.0.1", "240.0.0.0/4 reserved"),
    ("255.255.255.255", "255.255.255.255/32 limited broadcast"),
    # IPv4 multicast, its own registry
    ("224.0.0.1", "224.0.0.0/4 multicast"),
    # IPv6 special-purpose registry
    ("::1", "::1/128 loopback"),
    ("::", "::/128 unspecified"),
    ("::ffff:127.0.0.1", "::ffff:0:0/96 IPv4-mapped, of loopback"),
    ("::ffff:169.254.169.254", "::ffff:0:0/96 IPv4-mapped, of the metadata address"),
    ("64:ff9b::7f00:1", "64:ff9b::/96 NAT64, of loopback"),
    ("64:ff9b::a9fe:a9fe", "64:ff9b::/96 NAT64, of the metadata address"),
    ("64:ff9b:1::8.8.8.8", "64:ff9b:1::/48 local-use NAT64"),
    ("100::1", "100::/64 discard-only"),
    ("100:0:0:1::1", "100:0:0:1::/64 dummy prefix"),
    ("2001:1ff::1", "2001::/23 IETF protocol assignments"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::/32 Teredo"),
    ("2001:1::1", "2001:1::1/128 PCP anycast"),
    ("2001:1::2", "2001:1::2/128 TURN anycast"),
    ("2001:1::3", "2001:1::3/128 DNS-SD SRP anycast"),
    ("2001:2::1", "2001:2::/48 benchmarking"),
    ("2001:3::1", "2001:3::/32 AMT"),
    ("2001:4:112::1", "2001:4:112::/48 AS112-v6"),
    ("2001:10::1", "2001:10::/28 deprecated ORCHID"),
    ("2001:20::1", "2001:20::/28 ORCHIDv2"),
    ("2001:30::1", "2001:30::/28 drone remote ID tags"),
    ("2001:db8::1", "2001:db8::/32 documentation"),
    ("2002:7f00:1::1", "2002::/16 6to4, of loopback"),
    ("2002:a9fe:a9fe::", "2002::/16 6to4, of the metadata address"),
    ("2620:4f:8000::1", "2620:4f:8000::/48 AS112 direct delegation"),
    ("3fff::1", "3fff::/20 documentation"),
    ("5f00::1", "5f00::/16 segment routing"),
    ("fd00::1", "fc00::/7 unique local"),
    ("fe80::1", "fe80::/10 link-local"),
    # Outside the registry
    ("fec0::1", "fec0::/10 deprecated site-local"),
    ("ff02::1", "ff00::/8 multicast"),
    ("::127.0.0.1", "::/96 deprecated IPv4-compatible, of loopback"),
    ("::ffff:0:127.0.0.1", "::ffff:0:0:0/96 SIIT IPv4-translated, of loopback"),
    ("::ffff:0:169.254.169.254", "::ffff:0:0:0/96 SIIT IPv4-translated, of the metadata address"),
    ("::ffff:0:10.0.0.1", "::ffff:0:0:0/96 SIIT IPv4-translated, of a private address"),
    ("1::1", "0000::/8 reserved, outside 2000::/3"),
    ("::1:0:0:1", "0000::/8 reserved, outside 2000::/3"),
    ("4000::1", "4000::/2 reserved, outside 2000::/3"),
    ("e000::1", "e000::/4 reserved, outside 2000::/3"),
]

# Public addresses next to the refused ranges, so a range drawn too wide shows up.
PUBLIC_NEIGHBOURS: list[str] = [
    "192.0.3.1",
    "192.31.197.1",
    "192.52.192.1",
    "192.175.49.1",
    "2001:200::1",
    "2001:4860:4860::8888",
    "2620:4f:8001::1",
    "::ffff:0:8.8.8.8",
    "2c0f:f248::1",
]
