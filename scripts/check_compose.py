"""Check the compose files without a Docker engine: valid YAML, in step with the Dockerfile.

``python -m scripts.check_compose docker-compose.yml Dockerfile`` checks the one-node
layout: the service builds from this directory, publishes the container's port, keeps the
SQLite database's directory on a named volume, mounts a store master at the Dockerfile's
``RP_STORES``, runs the image's health check, stops with SIGTERM and time to drain, and
sets only ``RP_*`` variables.

``python -m scripts.check_compose --replicas docker-compose.replicas.yml Dockerfile``
checks the replicas layout: the same of every replica, except that replicas publish no
port; two or more of them; their ``RP_DATABASE_URL`` names the PostgreSQL service, its
user and database, and they wait for it to be healthy; PostgreSQL (15 or later) has a
health check and a volume; the load balancer alone publishes a port, and its config
(``scripts/check_haproxy.py``) balances over the replica service.

Nothing is run or resolved (no ``docker compose config``, no ``haproxy -c``): those would
look up the compose host names. Exit 0, or 1 listing every problem.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from scripts.check_haproxy import parse_haproxy
from scripts.check_haproxy import problems as haproxy_problems
from service.app import HTTP_SHUTDOWN_TIMEOUT
from service.config import Settings
from service.database_url import DatabaseKind, parse_database_url

__all__ = ["main", "problems", "replica_problems"]

SERVICE = "retail-pulse"
MIN_REPLICAS = 2
MIN_POSTGRES = 15
POSTGRES_DATA = "/var/lib/postgresql/data"
HAPROXY_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
# ${NAME}, ${NAME:-default}, ${NAME:?error}: compose fills these in when it runs.
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")


def _dockerfile_env(dockerfile: str, name: str) -> str | None:
    match = re.search(rf"\b{name}=(\S+)", dockerfile)
    return match[1] if match else None


def _duration(text: Any) -> float | None:
    """Seconds in a compose duration (``30s``, ``1m30s``), or None."""
    value = str(text)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's ``environment``, as a mapping or as a list of ``NAME=value``."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(str(entry).partition("=")[::2] for entry in raw)
    return {str(name): "" if value is None else str(value) for name, value in raw.items()}


def _image(service: dict[str, Any]) -> tuple[str, str]:
    """(name, tag) of the service's image; the tag is '' when there is none."""
    image = str(service.get("image", ""))
    name, _, tag = image.rpartition(":") if ":" in image.rpartition("/")[2] else (image, "", "")
    return name.rpartition("/")[2], tag


def _container_port(entry: Any) -> str:
    """The container side of a ``ports`` entry (``"8080:8080"``, ``"8080/tcp"``, or long form)."""
    if isinstance(entry, dict):
        return str(entry.get("target", ""))
    return str(entry).rpartition(":")[2].partition("/")[0]


def _volumes(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in service.get("volumes", []) if isinstance(v, dict)]


def _depends_on(service: dict[str, Any]) -> dict[str, Any]:
    raw = service.get("depends_on") or {}
    return {str(name): {} for name in raw} if isinstance(raw, list) else dict(raw)


def _service_problems(service: dict[str, Any], dockerfile: str) -> list[str]:
    """What every service of the image needs, in either layout."""
    found: list[str] = []
    if service.get("build") != ".":
        found.append("build must be '.' (the Dockerfile next to it)")
    stores = _dockerfile_env(dockerfile, "RP_STORES")
    if stores not in [v.get("target") for v in _volumes(service)]:
        found.append(f"no volume mounted at {stores} (the Dockerfile's RP_STORES)")
    test = (service.get("healthcheck") or {}).get("test", [])
    if not test or not any(part in dockerfile for part in test if part.startswith("/")):
        found.append("healthcheck must run the image's health check script")
    if service.get("stop_signal") != "SIGTERM":
        found.append("stop_signal must be SIGTERM")
    environment = _environment(service)
    for name in environment:
        if not name.startswith("RP_"):
            found.append(f"environment sets {name}; configuration is RP_* variables only")
    try:
        grace = float(environment.get("RP_SHUTDOWN_GRACE") or Settings().shutdown_grace)
    except ValueError:
        return [*found, "RP_SHUTDOWN_GRACE is not a number of seconds"]
    needed = grace + HTTP_SHUTDOWN_TIMEOUT
    stop_grace = _duration(service.get("stop_grace_period", "10s"))
    if stop_grace is None or stop_grace < needed:
        found.append(
            f"stop_grace_period {service.get('stop_grace_period', '10s (the default)')} is "
            f"under {needed:g}s (shutdown_grace {grace:g}s + {HTTP_SHUTDOWN_TIMEOUT:g}s for "
            "connections): Docker would SIGKILL a draining replica"
        )
    return found


def _services(compose: Any) -> dict[str, Any] | None:
    if not isinstance(compose, dict) or not isinstance(compose.get("services"), dict):
        return None
    return {name: s for name, s in compose["services"].items() if isinstance(s, dict)}


def problems(compose: Any, dockerfile: str) -> list[str]:
    """The one-node layout: one service on SQLite, publishing its port."""
    services = _services(compose)
    if services is None:
        return ["no services mapping"]
    service = services.get(SERVICE)
    if service is None:
        return [f"no service named {SERVICE}"]
    found = _service_problems(service, dockerfile)
    port = _dockerfile_env(dockerfile, "RP_PORT")
    if not any(_container_port(entry) == port for entry in service.get("ports", [])):
        found.append(f"no ports entry publishing container port {port} (RP_PORT)")
    found += _database_volume_problems(compose, service, dockerfile)
    return found


def _database_volume_problems(compose: Any, service: dict[str, Any], dockerfile: str) -> list[str]:
    url = _environment(service).get("RP_DATABASE_URL") or _dockerfile_env(
        dockerfile, "RP_DATABASE_URL"
    )
    try:
        database = parse_database_url(url or "")
    except ValueError as exc:
        return [f"RP_DATABASE_URL: {exc}"]
    if database.kind is not DatabaseKind.SQLITE or database.path is None:
        return [f"RP_DATABASE_URL is {database}: the one-node layout keeps a SQLite file"]
    if not database.path.is_absolute():
        return [f"RP_DATABASE_URL {database} is relative: give the volume's absolute path"]
    directory = str(database.path.parent)
    declared = compose.get("volumes") or {}
    for volume in _volumes(service):
        if volume.get("target") == directory:
            if volume.get("type") == "volume" and volume.get("source") in declared:
                return []
            return [f"{directory} must be a named volume declared under volumes:"]
    return [f"no named volume at {directory}, the database's directory: jobs would not survive"]


def replica_problems(compose: Any, dockerfile: str, base: Path) -> list[str]:
    """The replicas layout; ``base`` is the compose file's directory (where bind-mount
    sources are relative to)."""
    services = _services(compose)
    if services is None:
        return ["no services mapping"]
    replica = services.get(SERVICE)
    if replica is None:
        return [f"no service named {SERVICE}"]
    found = _service_problems(replica, dockerfile)
    if replica.get("ports"):
        found.append(f"{SERVICE} publishes ports: only the load balancer may")
    if "container_name" in replica:
        found.append(f"{SERVICE} sets container_name, so it cannot have replicas")
    replicas = (replica.get("deploy") or {}).get("replicas", 1)
    if not isinstance(replicas, int) or replicas < MIN_REPLICAS:
        found.append(f"deploy.replicas is {replicas}: the layout runs {MIN_REPLICAS} or more")
        replicas = MIN_REPLICAS
    databases = [n for n, s in services.items() if _image(s)[0] == "postgres"]
    balancers = [n for n, s in services.items() if _image(s)[0] == "haproxy"]
    if len(databases) != 1:
        found.append(f"{len(databases)} postgres services; the layout has one")
    else:
        found += _postgres_problems(compose, databases[0], services[databases[0]])
        found += _database_url_problems(replica, databases[0], services[databases[0]])
    if len(balancers) != 1:
        found.append(f"{len(balancers)} haproxy services; the layout has one load balancer")
    else:
        port = _environment(replica).get("RP_PORT") or _dockerfile_env(dockerfile, "RP_PORT")
        if port is None or not port.isdigit():
            found.append(f"RP_PORT {port} is not a port number")
        else:
            balancer = services[balancers[0]]
            found += _balancer_problems(balancers[0], balancer, int(port), replicas, base)
    for name, service in services.items():
        if service.get("ports") and name not in (SERVICE, *balancers):
            found.append(f"{name} publishes ports: only the load balancer may")
    return found


def _postgres_problems(compose: Any, name: str, service: dict[str, Any]) -> list[str]:
    found: list[str] = []
    tag = _image(service)[1]
    major = re.match(r"\d+", tag)
    if major is None or int(major[0]) < MIN_POSTGRES:
        found.append(f"{name}: image tag {tag or '(none)'} is not PostgreSQL {MIN_POSTGRES}+")
    test = (service.get("healthcheck") or {}).get("test", [])
    if "pg_isready" not in " ".join(map(str, test if isinstance(test, list) else [test])):
        found.append(f"{name}: the healthcheck must run pg_isready")
    declared = compose.get("volumes") or {}
    if not any(
        v.get("target") == POSTGRES_DATA and v.get("source") in declared for v in _volumes(service)
    ):
        found.append(f"{name}: no named volume at {POSTGRES_DATA}: the jobs would not survive")
    return found


def _normalised(text: str) -> str:
    """``text`` with each ${NAME...} reduced to ${NAME}: the same variable is the same value."""
    return _INTERPOLATION.sub(lambda match: f"${{{match[1]}}}", text)


def _database_url_problems(
    replica: dict[str, Any], database: str, service: dict[str, Any]
) -> list[str]:
    url = _environment(replica).get("RP_DATABASE_URL")
    if not url:
        return ["RP_DATABASE_URL is not set: each replica would keep its own SQLite file"]
    # Each ${...} becomes a plain token first: its default or error text may hold
    # characters that would split the URL.
    variables: dict[str, str] = {}

    def token(match: re.Match[str]) -> str:
        variables[f"var{len(variables)}x"] = f"${{{match[1]}}}"
        return f"var{len(variables) - 1}x"

    try:
        parts = urlsplit(_INTERPOLATION.sub(token, url))
        port = parts.port
    except ValueError as exc:
        return [f"RP_DATABASE_URL is not a URL: {exc}"]
    if parts.scheme not in ("postgresql", "postgres"):
        return ["RP_DATABASE_URL must be postgresql://...: replicas share one database"]
    found: list[str] = []
    if parts.hostname != database:
        found.append(f"RP_DATABASE_URL's host is {parts.hostname}, not the service {database}")
    if port not in (None, 5432):
        found.append(f"RP_DATABASE_URL's port is {port}, not PostgreSQL's 5432")
    environment = _environment(service)
    user = environment.get("POSTGRES_USER") or "postgres"
    dbname = environment.get("POSTGRES_DB") or user
    if parts.username != user:
        found.append(f"RP_DATABASE_URL's user is {parts.username}, not POSTGRES_USER {user}")
    if parts.path.strip("/") != dbname:
        found.append(f"RP_DATABASE_URL's database is {parts.path.strip('/')}, not {dbname}")
    password = parts.password or ""
    for key, variable in variables.items():
        password = password.replace(key, variable)
    expected = environment.get("POSTGRES_PASSWORD", "")
    if not expected:
        found.append(f"{database}: POSTGRES_PASSWORD is not set (the image refuses to start)")
    elif _normalised(password) != _normalised(expected):
        found.append("RP_DATABASE_URL's password is not POSTGRES_PASSWORD")
    condition = _depends_on(replica).get(database, {}).get("condition")
    if condition != "service_healthy":
        found.append(f"{SERVICE} must depend on {database} with condition: service_healthy")
    return found


def _balancer_problems(
    name: str, service: dict[str, Any], port: int, replicas: int, base: Path
) -> list[str]:
    found: list[str] = []
    tag = _image(service)[1]
    if tag in ("", "latest"):
        found.append(f"{name}: pin the image to a version, not {tag or 'an untagged image'}")
    published = list(service.get("ports", []))
    if len(published) != 1:
        found.append(f"{name} publishes {len(published)} ports; the load balancer has one")
    sources = [v.get("source") for v in _volumes(service) if v.get("target") == HAPROXY_CONFIG]
    if not sources:
        return [*found, f"{name}: no config bind-mounted at {HAPROXY_CONFIG}"]
    path = base / str(sources[0])
    try:
        config = parse_haproxy(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [*found, f"{name}: cannot read its config {path}: {exc.strerror}"]
    found += [
        f"{path.name}: {problem}"
        for problem in haproxy_problems(config, upstream=SERVICE, port=port, replicas=replicas)
    ]
    bound = config.bind_ports()
    for entry in published:
        container_port = _container_port(entry)
        if not container_port.isdigit() or int(container_port) not in bound:
            found.append(f"{name} publishes {entry}, a port its config does not bind")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", action="store_true", help="check the replicas layout")
    parser.add_argument("compose", nargs="?", default="docker-compose.yml", type=Path)
    parser.add_argument("dockerfile", nargs="?", default="Dockerfile", type=Path)
    args = parser.parse_args(argv)
    try:
        compose = yaml.safe_load(args.compose.read_text(encoding="utf-8"))
        dockerfile = args.dockerfile.read_text(encoding="utf-8")
    except (OSError, yaml.YAMLError) as exc:
        print(f"{args.compose}: {exc}", file=sys.stderr)
        return 1
    if args.replicas:
        found = replica_problems(compose, dockerfile, args.compose.parent)
    else:
        found = problems(compose, dockerfile)
    for line in found:
        print(f"{args.compose}: {line}", file=sys.stderr)
    if not found:
        print(f"{args.compose}: ok")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
