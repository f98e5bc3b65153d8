"""scripts/check_haproxy.py: the structural check of the load balancer's config."""

from __future__ import annotations

import pytest

from scripts.check_haproxy import parse_duration, parse_haproxy, problems

GOOD = """\
global
    log stdout format raw local0 info

defaults
    mode http
    timeout connect 5s
    timeout client 10m
    timeout server 10m

resolvers docker
    parse-resolv-conf

frontend api
    bind :8080
    default_backend replicas

backend replicas
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host retail-pulse
    server-template replica 1-10 retail-pulse:8080 check resolvers docker init-addr none
"""


def _problems(text: str, replicas: int = 2) -> list[str]:
    return problems(parse_haproxy(text), upstream="retail-pulse", port=8080, replicas=replicas)


def test_the_good_config_passes_and_binds_its_port() -> None:
    config = parse_haproxy(GOOD)

    assert _problems(GOOD) == []
    assert config.bind_ports() == {8080}
    [server] = config.servers(config.named("backend", "replicas"))  # type: ignore[arg-type]
    assert (server.host, server.port, server.slots, server.template) == (
        "retail-pulse",
        8080,
        10,
        True,
    )


def test_static_server_lines_with_resolvers_and_the_old_httpchk_form_pass() -> None:
    send = "    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host retail-pulse\n"
    template = "    server-template replica 1-10 retail-pulse:8080 check"
    text = GOOD.replace(f"    option httpchk\n{send}", "    option httpchk GET /readyz\n")
    text = text.replace(
        f"{template} resolvers docker init-addr none\n",
        "    server a retail-pulse:8080 check resolvers docker init-addr none\n"
        "    server b retail-pulse:8080 check resolvers docker init-addr last,none\n",
    )
    assert "server-template" not in text
    assert "http-check send" not in text

    assert _problems(text) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "init-addr none\n",
            "init-addr none\n    server extra app:8080 check resolvers docker init-addr none\n",
            "server app is not the replica service retail-pulse",
        ),
        ("retail-pulse:8080 check", "retail-pulse:9000 check", "port 9000 is not 8080"),
        (" check resolvers", " resolvers", "is not health-checked ('check')"),
        ("replica 1-10 ", "replica 1 ", "1 server slot(s) for 2 replicas"),
        ("uri /readyz", "uri /healthz", "the health check asks /healthz, not /readyz"),
        ("    option httpchk\n", "", "it would only check that a port is open"),
        ("timeout server 10m", "timeout server 30s", "would cut a CSV export"),
        ("timeout client 10m", "timeout client 50000", "would cut a CSV export"),
        ("    timeout client 10m\n", "", "frontend api has no 'timeout client'"),
        ("timeout server 10m", "timeout server soon", "'timeout server soon' is not a time"),
        ("    timeout connect 5s\n", "", "has no 'timeout connect'"),
        (" resolvers docker init-addr", " init-addr", "names no resolvers section"),
        ("resolvers docker\n", "resolvers dns\n", "resolvers docker is not defined"),
        ("    parse-resolv-conf\n", "", "has no nameserver and no parse-resolv-conf"),
        (" init-addr none", "", "needs 'init-addr none'"),
        ("default_backend replicas", "default_backend api", "backend api is named but not"),
        ("    default_backend replicas\n", "", "no frontend names a backend"),
        ("    bind :8080\n", "", "frontend api binds no port"),
        ("    mode http\n", "    mode tcp\n", "frontend api is not 'mode http'"),
        ("global\n", "", "'log' before any section"),
        ("format raw", 'format "raw', "line 2: No closing quotation"),
        ("server-template replica 1-10 ", "# no servers: ", "has no server or server-template"),
    ],
)
def test_each_broken_config_reports_its_problem(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    found = _problems(GOOD.replace(old, new, 1))

    assert len(found) == 1, found
    assert expected in found[0]


def test_no_frontend_at_all() -> None:
    assert _problems("backend replicas\n    server a retail-pulse:8080 check\n") == [
        "no frontend section"
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("10m", 600.0), ("1h", 3600.0), ("2d", 172800.0), ("1500", 1.5)],
)
def test_durations_in_haproxy_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 s", "1.5s", "soon", "-1s"])
def test_what_is_not_a_duration(text: str) -> None:
    assert parse_duration(text) is None
