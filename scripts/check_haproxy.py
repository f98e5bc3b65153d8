"""Check an HAProxy config by its structure alone, for ``scripts/check_compose.py``.

``haproxy -c`` would resolve every server's host name (the compose service names), a DNS
query off the machine, so this reads the text: sections, then directives split into
words. It checks what the replicas layout relies on: a frontend that binds a port and
sends everything to a backend; that backend's servers are the replica service on its port,
health-checked on ``/readyz``; a ``server-template`` re-reads the service's addresses
from DNS (``resolvers``), so ``--scale`` adds servers; and the idle timeouts leave room for
long CSV exports and event streams.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

__all__ = [
    "MIN_STREAM_IDLE",
    "READY_PATH",
    "HaproxyConfig",
    "Section",
    "Server",
    "parse_duration",
    "parse_haproxy",
    "problems",
]

# The first word of a line that opens a section; every other line belongs to the last one.
SECTION_KEYWORDS = frozenset(
    {
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "resolvers",
        "peers",
        "userlist",
        "mailers",
        "program",
        "http-errors",
        "ring",
        "cache",
    }
)
# The path a replica answers 200 on only while it can take work (503 while draining).
READY_PATH = "/readyz"
# Seconds a CSV export or an event stream may go without sending a byte before the
# balancer cuts it: an event stream must send something (a comment line) more often.
MIN_STREAM_IDLE = 300.0

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(\d+)(us|ms|s|m|h|d)?$")


def parse_duration(text: str) -> float | None:
    """Seconds in an HAProxy time (``5s``, ``10m``, ``1h``; a bare number is milliseconds)."""
    match = _DURATION.match(text)
    if match is None:
        return None
    return int(match[1]) * _UNITS[match[2] or "ms"]


@dataclass(frozen=True, slots=True)
class Section:
    kind: str
    name: str
    line: int
    directives: list[list[str]] = field(default_factory=list)

    def find(self, *words: str) -> list[list[str]]:
        """The directives that start with ``words``."""
        return [d for d in self.directives if d[: len(words)] == list(words)]


@dataclass(frozen=True, slots=True)
class Server:
    """A ``server`` line, or a ``server-template`` standing for ``slots`` servers."""

    backend: str
    host: str
    port: int | None
    slots: int
    params: list[str]
    template: bool

    def param(self, name: str) -> str | None:
        """The value after ``name`` among the server's parameters."""
        if name in self.params[:-1]:
            return self.params[self.params.index(name) + 1]
        return None


@dataclass(frozen=True, slots=True)
class HaproxyConfig:
    sections: list[Section]
    errors: list[str]

    def named(self, kind: str, name: str) -> Section | None:
        return next((s for s in self.sections if s.kind == kind and s.name == name), None)

    def of_kind(self, *kinds: str) -> list[Section]:
        return [s for s in self.sections if s.kind in kinds]

    def setting(self, section: Section, *words: str) -> list[str] | None:
        """The last directive starting with ``words`` in ``section``, else in the
        ``defaults`` section before it (what HAProxy would apply)."""
        own = section.find(*words)
        if own:
            return own[-1]
        defaults = [s for s in self.sections if s.kind == "defaults" and s.line < section.line]
        if defaults and defaults[-1].find(*words):
            return defaults[-1].find(*words)[-1]
        return None

    def bind_ports(self) -> set[int]:
        """The ports the frontends and listen sections bind (``:8080``, ``*:8080``, ...)."""
        ports: set[int] = set()
        for section in self.of_kind("frontend", "listen"):
            for directive in section.find("bind"):
                for address in directive[1:2]:
                    port = address.rpartition(":")[2]
                    if port.isdigit():
                        ports.add(int(port))
        return ports

    def servers(self, section: Section) -> list[Server]:
        found: list[Server] = []
        for directive in section.directives:
            if directive[0] == "server" and len(directive) >= 3:
                found.append(_server(section.name, directive[2], 1, directive[3:], False))
            elif directive[0] == "server-template" and len(directive) >= 4:
                low, _, high = directive[2].partition("-")
                if not low.isdigit() or (high and not high.isdigit()):
                    continue
                slots = int(high) - int(low) + 1 if high else int(low)
                found.append(_server(section.name, directive[3], slots, directive[4:], True))
        return found


def _server(backend: str, address: str, slots: int, params: list[str], template: bool) -> Server:
    host, colon, port = address.rpartition(":")
    if not colon:
        host, port = address, ""
    return Server(backend, host, int(port) if port.isdigit() else None, slots, params, template)


def parse_haproxy(text: str) -> HaproxyConfig:
    sections: list[Section] = []
    errors: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as exc:
            errors.append(f"line {number}: {exc}")
            continue
        if not words:
            continue
        if words[0] in SECTION_KEYWORDS:
            sections.append(Section(words[0], words[1] if len(words) > 1 else "", number))
        elif not sections:
            errors.append(f"line {number}: {words[0]!r} before any section")
        else:
            sections[-1].directives.append(words)
    return HaproxyConfig(sections, errors)


def _check_request_path(config: HaproxyConfig, backend: Section) -> str | None:
    """The path the backend's HTTP health check asks for, or None without one."""
    option = config.setting(backend, "option", "httpchk")
    if option is None:
        return None
    send = config.setting(backend, "http-check", "send")
    if send is not None and "uri" in send[:-1]:
        return send[send.index("uri") + 1]
    # option httpchk [<method>] <uri> [<version>]
    rest = option[2:]
    if len(rest) >= 2:
        return rest[1]
    if len(rest) == 1 and rest[0].startswith("/"):
        return rest[0]
    return "/"


def problems(config: HaproxyConfig, *, upstream: str, port: int, replicas: int) -> list[str]:
    """What keeps ``config`` from balancing over the ``replicas`` of service ``upstream``
    (a compose service name) listening on ``port``."""
    found = list(config.errors)
    frontends = config.of_kind("frontend", "listen")
    if not frontends:
        return [*found, "no frontend section"]
    for frontend in frontends:
        if not frontend.find("bind"):
            found.append(f"frontend {frontend.name} binds no port")
        mode = config.setting(frontend, "mode")
        if mode is None or mode[1:] != ["http"]:
            found.append(f"frontend {frontend.name} is not 'mode http'")
        idle = config.setting(frontend, "timeout", "client")
        found += _idle_problems(f"frontend {frontend.name}", "client", idle)
    backends = {
        d[1]
        for f in frontends
        for d in (*f.find("default_backend"), *f.find("use_backend"))
        if len(d) > 1
    }
    backends |= {s.name for s in config.of_kind("listen") if config.servers(s)}
    if not backends:
        found.append("no frontend names a backend (default_backend)")
    for name in sorted(backends):
        backend = config.named("backend", name) or config.named("listen", name)
        if backend is None:
            found.append(f"backend {name} is named but not defined")
            continue
        found += _backend_problems(config, backend, upstream, port, replicas)
    return found


def _idle_problems(where: str, side: str, directive: list[str] | None) -> list[str]:
    if directive is None or len(directive) < 3:
        return [f"{where} has no 'timeout {side}'"]
    seconds = parse_duration(directive[2])
    if seconds is None:
        return [f"{where}: 'timeout {side} {directive[2]}' is not a time"]
    if seconds < MIN_STREAM_IDLE:
        return [
            f"{where}: 'timeout {side} {directive[2]}' would cut a CSV export or an event "
            f"stream idle for {MIN_STREAM_IDLE:.0f}s"
        ]
    return []


def _backend_problems(
    config: HaproxyConfig, backend: Section, upstream: str, port: int, replicas: int
) -> list[str]:
    where = f"backend {backend.name}"
    found: list[str] = []
    servers = config.servers(backend)
    if not servers:
        return [f"{where} has no server or server-template line"]
    for server in servers:
        if server.host != upstream:
            found.append(f"{where}: server {server.host} is not the replica service {upstream}")
        if server.port != port:
            found.append(f"{where}: server {server.host} port {server.port} is not {port}")
        if "check" not in server.params:
            found.append(f"{where}: server {server.host} is not health-checked ('check')")
        found += _resolution_problems(config, where, server)
    slots = sum(server.slots for server in servers if server.host == upstream)
    if slots < replicas:
        found.append(f"{where}: {slots} server slot(s) for {replicas} replicas")
    path = _check_request_path(config, backend)
    if path is None:
        found.append(f"{where} has no 'option httpchk': it would only check that a port is open")
    elif path.partition("?")[0] != READY_PATH:
        found.append(f"{where}: the health check asks {path}, not {READY_PATH}")
    idle = config.setting(backend, "timeout", "server")
    found += _idle_problems(where, "server", idle)
    if config.setting(backend, "timeout", "connect") is None:
        found.append(f"{where} has no 'timeout connect'")
    return found


def _resolution_problems(config: HaproxyConfig, where: str, server: Server) -> list[str]:
    # The service name stands for every replica's address. Without a resolvers section
    # HAProxy resolves it once, at start, through libc, and takes the first address only:
    # every server would be the same replica, and --scale or a restart would go unseen.
    kind = "server-template" if server.template else "server"
    name = server.param("resolvers")
    if name is None:
        return [f"{where}: {kind} {server.host} names no resolvers section"]
    resolvers = config.named("resolvers", name)
    found: list[str] = []
    if resolvers is None:
        found.append(f"{where}: resolvers {name} is not defined")
    elif not resolvers.find("nameserver") and not resolvers.find("parse-resolv-conf"):
        found.append(f"resolvers {name} has no nameserver and no parse-resolv-conf")
    init = server.param("init-addr") or "last,libc"
    if "none" not in init.split(","):
        # Otherwise HAProxy refuses to start while a replica is not resolvable yet.
        found.append(f"{where}: {kind} {server.host} needs 'init-addr none'")
    return found
