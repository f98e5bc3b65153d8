"""scripts/check_compose.py, run by `make hadolint`, on compose documents written here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.check_compose import main

ROOT = Path(__file__).resolve().parents[3]

DOCKERFILE = """\
FROM python:3.11-slim
ENV RP_HOST=0.0.0.0 \\
    RP_PORT=8080 \\
    RP_STORES=/etc/retail-pulse/stores.csv \\
    RP_DATABASE_URL=sqlite:////data/retail-pulse.db
COPY scripts/healthcheck.py /app/healthcheck.py
VOLUME ["/data"]
"""

SERVICE = """\
build: .
image: retail-pulse:latest
environment:
  RP_LOG_LEVEL: info
volumes:
  - type: bind
    source: ./stores.csv
    target: /etc/retail-pulse/stores.csv
    read_only: true
healthcheck:
  test: ["CMD", "python", "/app/healthcheck.py"]
stop_signal: SIGTERM
stop_grace_period: 30s
"""

# The service's own lines come from SERVICE (see _one_node and _replicas).
ONE_NODE = """\
services:
  retail-pulse:
    ports: ["8080:8080"]
volumes:
  data: {}
"""

REPLICAS = """\
services:
  postgres:
    image: postgres:16
    environment:
      POSTGRES_USER: rp
      POSTGRES_DB: jobs
      POSTGRES_PASSWORD: ${DB_PASSWORD:?set DB_PASSWORD}
    volumes:
      - type: volume
        source: pgdata
        target: /var/lib/postgresql/data
    healthcheck:
      test: ["CMD", "pg_isready", "--host=127.0.0.1"]
  retail-pulse:
    deploy:
      replicas: 2
    depends_on:
      postgres:
        condition: service_healthy
  balancer:
    image: haproxy:3.0
    ports: ["80:8080"]
    volumes:
      - type: bind
        source: ./lb/haproxy.cfg
        target: /usr/local/etc/haproxy/haproxy.cfg
volumes:
  pgdata: {}
"""
DATABASE_URL = "postgresql://rp:${DB_PASSWORD:?set DB_PASSWORD (hex)}@postgres:5432/jobs"

HAPROXY = """\
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
    option httpchk GET /readyz
    server-template replica 1-4 retail-pulse:8080 check resolvers docker init-addr none
"""

Services = dict[str, Any]


def _one_node() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(ONE_NODE)
    compose["services"]["retail-pulse"].update(yaml.safe_load(SERVICE))
    compose["services"]["retail-pulse"]["volumes"].append(
        {"type": "volume", "source": "data", "target": "/data"}
    )
    return compose


def _replicas() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(REPLICAS)
    compose["services"]["retail-pulse"].update(yaml.safe_load(SERVICE))
    compose["services"]["retail-pulse"]["environment"]["RP_DATABASE_URL"] = DATABASE_URL
    return compose


def _run(
    tmp_path: Path,
    compose: dict[str, Any],
    replicas: bool,
    capsys: pytest.CaptureFixture[str],
    haproxy: str | None = HAPROXY,
) -> tuple[int, list[str]]:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE, encoding="utf-8")
    compose_path = tmp_path / "compose.yml"
    compose_path.write_text(yaml.safe_dump(compose), encoding="utf-8")
    if haproxy is not None:
        (tmp_path / "lb").mkdir(exist_ok=True)
        (tmp_path / "lb" / "haproxy.cfg").write_text(haproxy, encoding="utf-8")
    flags = ["--replicas"] if replicas else []
    code = main([*flags, str(compose_path), str(tmp_path / "Dockerfile")])
    captured = capsys.readouterr()
    prefix = f"{compose_path}: "
    return code, [line.removeprefix(prefix) for line in captured.err.splitlines()]


def test_the_repository_files_pass(capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = str(ROOT / "Dockerfile")
    assert main([str(ROOT / "docker-compose.yml"), dockerfile]) == 0
    assert main(["--replicas", str(ROOT / "docker-compose.replicas.yml"), dockerfile]) == 0
    assert capsys.readouterr().err == ""


def test_good_documents_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, _one_node(), False, capsys) == (0, [])
    assert _run(tmp_path, _replicas(), True, capsys) == (0, [])


def _set(path: str, value: Any) -> Callable[[Services], None]:
    """A mutation that sets services[a][b]... = value (None deletes it)."""

    def mutate(services: Services) -> None:
        *parents, last = path.split(".")
        node = services
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value

    return mutate


ONE_NODE_BREAKS = [
    (_set("retail-pulse.ports", None), "no ports entry publishing container port 8080"),
    (_set("retail-pulse.build", "./service"), "build must be '.'"),
    (_set("retail-pulse.stop_signal", "SIGKILL"), "stop_signal must be SIGTERM"),
    (_set("retail-pulse.stop_grace_period", None), "stop_grace_period 10s (the default) is"),
    (_set("retail-pulse.environment.LOG_LEVEL", "debug"), "environment sets LOG_LEVEL"),
    (_set("retail-pulse.healthcheck", {"test": ["CMD", "true"]}), "healthcheck must run"),
    (
        _set("retail-pulse.environment.RP_SHUTDOWN_GRACE", "${GRACE}"),
        "RP_SHUTDOWN_GRACE is not a number of seconds",
    ),
    (
        _set("retail-pulse.environment.RP_SHUTDOWN_GRACE", "60"),
        "stop_grace_period 30s is under 65s (shutdown_grace 60s + 5s for connections)",
    ),
    (
        lambda services: services["retail-pulse"]["volumes"].pop(0),
        "no volume mounted at /etc/retail-pulse/stores.csv",
    ),
    (
        lambda services: services["retail-pulse"]["volumes"].pop(1),
        "no named volume at /data, the database's directory",
    ),
    (
        lambda services: services["retail-pulse"]["volumes"][1].update(
            type="bind", source="./data"
        ),
        "/data must be a named volume declared under volumes:",
    ),
    (
        _set("retail-pulse.environment.RP_DATABASE_URL", "memory"),
        "RP_DATABASE_URL is memory: the one-node layout keeps a SQLite file",
    ),
    (
        _set("retail-pulse.environment.RP_DATABASE_URL", "sqlite:///jobs.db"),
        "RP_DATABASE_URL sqlite:///jobs.db is relative",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), ONE_NODE_BREAKS)
def test_each_broken_one_node_document_reports_its_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: Callable[[Services], None],
    expected: str,
) -> None:
    compose = _one_node()
    mutate(compose["services"])

    code, found = _run(tmp_path, compose, False, capsys)

    assert code == 1
    assert len(found) == 1, found
    assert expected in found[0]


REPLICA_BREAKS = [
    (_set("retail-pulse.ports", ["8080:8080"]), "retail-pulse publishes ports: only the load"),
    (_set("postgres.ports", ["5432:5432"]), "postgres publishes ports: only the load balancer"),
    (_set("retail-pulse.deploy", None), "deploy.replicas is 1: the layout runs 2 or more"),
    (_set("retail-pulse.container_name", "rp"), "sets container_name, so it cannot have replicas"),
    (_set("retail-pulse.stop_grace_period", "5s"), "stop_grace_period 5s is under 15s"),
    (_set("retail-pulse.environment.RP_DATABASE_URL", None), "RP_DATABASE_URL is not set"),
    (
        _set("retail-pulse.environment.RP_DATABASE_URL", DATABASE_URL.replace("@postgres", "@db")),
        "RP_DATABASE_URL's host is db, not the service postgres",
    ),
    (
        _set("retail-pulse.environment.RP_DATABASE_URL", DATABASE_URL.replace(":5432", ":6432")),
        "RP_DATABASE_URL's port is 6432",
    ),
    (
        _set("retail-pulse.environment.RP_DATABASE_URL", DATABASE_URL.replace("rp:", "admin:")),
        "RP_DATABASE_URL's user is admin, not POSTGRES_USER rp",
    ),
    (
        _set("retail-pulse.environment.RP_DATABASE_URL", DATABASE_URL.replace("/jobs", "/other")),
        "RP_DATABASE_URL's database is other, not jobs",
    ),
    (
        _set("retail-pulse.environment.RP_DATABASE_URL", DATABASE_URL.replace("DB_", "PG_")),
        "RP_DATABASE_URL's password is not POSTGRES_PASSWORD",
    ),
    (
        _set("retail-pulse.environment.RP_DATABASE_URL", "sqlite:////data/retail-pulse.db"),
        "RP_DATABASE_URL must be postgresql://",
    ),
    (_set("postgres.environment.POSTGRES_PASSWORD", None), "POSTGRES_PASSWORD is not set"),
    (
        _set("retail-pulse.depends_on", ["postgres"]),
        "retail-pulse must depend on postgres with condition: service_healthy",
    ),
    (_set("postgres.healthcheck", None), "postgres: the healthcheck must run pg_isready"),
    (_set("postgres.image", "postgres:14"), "image tag 14 is not PostgreSQL 15+"),
    (_set("postgres.image", "postgres"), "image tag (none) is not PostgreSQL 15+"),
    (_set("postgres.volumes", []), "postgres: no named volume at /var/lib/postgresql/data"),
    (_set("balancer.image", "haproxy:latest"), "pin the image to a version, not latest"),
    (_set("balancer.ports", None), "balancer publishes 0 ports; the load balancer has one"),
    (_set("balancer.ports", ["80:80"]), "balancer publishes 80:80, a port its config does not"),
    (_set("balancer.volumes", []), "balancer: no config bind-mounted at"),
    (_set("retail-pulse.environment.RP_PORT", "http"), "RP_PORT http is not a port number"),
    (
        lambda services: services["balancer"]["volumes"][0].update(source="./nowhere.cfg"),
        "balancer: cannot read its config",
    ),
    (
        _set("balancer", None),
        "0 haproxy services; the layout has one load balancer",
    ),
    (
        _set("retail-pulse.deploy", {"replicas": 5}),
        "haproxy.cfg: backend replicas: 4 server slot(s) for 5 replicas",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), REPLICA_BREAKS)
def test_each_broken_replicas_document_reports_its_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: Callable[[Services], None],
    expected: str,
) -> None:
    compose = _replicas()
    mutate(compose["services"])

    code, found = _run(tmp_path, compose, True, capsys)

    assert code == 1
    assert len(found) == 1, found
    assert expected in found[0]


def test_the_balancer_config_is_checked_against_the_replica_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    haproxy = HAPROXY.replace("retail-pulse:8080", "retail-pulse:9090")

    code, found = _run(tmp_path, _replicas(), True, capsys, haproxy)

    assert code == 1
    assert found == ["haproxy.cfg: backend replicas: server retail-pulse port 9090 is not 8080"]


def test_the_one_node_layout_is_not_a_replicas_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, found = _run(tmp_path, _one_node(), True, capsys)

    assert code == 1
    assert "retail-pulse publishes ports: only the load balancer may" in found
    assert "deploy.replicas is 1: the layout runs 2 or more" in found
    assert "0 postgres services; the layout has one" in found


def test_not_a_compose_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, {"version": "3"}, False, capsys) == (1, ["no services mapping"])
    assert _run(tmp_path, {"services": {"web": {}}}, True, capsys) == (
        1,
        ["no service named retail-pulse"],
    )
