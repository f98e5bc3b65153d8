"""Check docker-compose.yml without a Docker engine: valid YAML, and in step with the Dockerfile.

``python scripts/check_compose.py [docker-compose.yml] [Dockerfile]`` checks that the
service builds from this directory, publishes the container's port, mounts a store master
at the Dockerfile's ``RP_STORES`` path, runs the image's health check, stops with SIGTERM,
and sets only ``RP_*`` variables. Exit 0, or 1 listing every problem.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main", "problems"]

SERVICE = "retail-pulse"


def _dockerfile_env(dockerfile: str, name: str) -> str | None:
    match = re.search(rf"\b{name}=(\S+)", dockerfile)
    return match[1] if match else None


def problems(compose: Any, dockerfile: str) -> list[str]:
    if not isinstance(compose, dict) or not isinstance(compose.get("services"), dict):
        return ["no services mapping"]
    service = compose["services"].get(SERVICE)
    if not isinstance(service, dict):
        return [f"no service named {SERVICE}"]
    found: list[str] = []
    if service.get("build") != ".":
        found.append("build must be '.' (the Dockerfile next to it)")
    port = _dockerfile_env(dockerfile, "RP_PORT")
    if not any(str(entry).endswith(f":{port}") for entry in service.get("ports", [])):
        found.append(f"no ports entry publishing container port {port} (RP_PORT)")
    stores = _dockerfile_env(dockerfile, "RP_STORES")
    targets = [v.get("target") for v in service.get("volumes", []) if isinstance(v, dict)]
    if stores not in targets:
        found.append(f"no volume mounted at {stores} (the Dockerfile's RP_STORES)")
    test = service.get("healthcheck", {}).get("test", [])
    if not test or not any(part in dockerfile for part in test if part.startswith("/")):
        found.append("healthcheck must run the image's health check script")
    if service.get("stop_signal") != "SIGTERM":
        found.append("stop_signal must be SIGTERM")
    for name in service.get("environment", {}) or {}:
        if not str(name).startswith("RP_"):
            found.append(f"environment sets {name}; configuration is RP_* variables only")
    return found


def main() -> int:
    compose_path = Path(sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml")
    dockerfile_path = Path(sys.argv[2] if len(sys.argv) > 2 else "Dockerfile")
    try:
        compose = yaml.safe_load(compose_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        print(f"{compose_path}: {exc}", file=sys.stderr)
        return 1
    found = problems(compose, dockerfile_path.read_text(encoding="utf-8"))
    for line in found:
        print(f"{compose_path}: {line}", file=sys.stderr)
    if not found:
        print(f"{compose_path}: ok")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
