"""The job stores the bench runs the service on: memory, SQLite, PostgreSQL with 1 or 2 replicas.

A deployment is the service processes of one run and the store they share:
SQLite gets a fresh file per run (``ServiceProcess`` puts it beside the log),
PostgreSQL a fresh database on the bench server, dropped afterwards. Only
databases this module created are ever dropped.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.procs import REPO, ServiceProcess, cpu_seconds

__all__ = ["DEFAULT_PG_SERVER", "JOB_STORES", "Deployment", "JobStoreSpec", "postgres_version"]

DEFAULT_PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
_PROCESSED = re.compile(r"^retail_pulse_images_processed_total(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class JobStoreSpec:
    name: str
    kind: str  # "memory", "sqlite" or "postgresql"
    replicas: int = 1


JOB_STORES = {
    spec.name: spec
    for spec in (
        JobStoreSpec("sqlite", "sqlite"),
        JobStoreSpec("memory", "memory"),
        JobStoreSpec("postgres", "postgresql"),
        # Two `python -m service` processes on one database: submits go to the
        # first, both claim its images.
        JobStoreSpec("postgres-x2", "postgresql", replicas=2),
    )
}


async def _admin(server: str, sql: str) -> str | None:
    connection = await asyncpg.connect(f"{server}/postgres", timeout=10)
    try:
        value = await asyncio.wait_for(connection.fetchval(sql), 60)
    finally:
        await connection.close()
    return None if value is None else str(value)


def postgres_version(server: str) -> str:
    """The server's version, for the report."""
    return asyncio.run(_admin(server, "SHOW server_version")) or "?"


async def _backend_pids(server: str, database: str) -> list[int]:
    connection = await asyncpg.connect(f"{server}/postgres", timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", database
        )
    finally:
        await connection.close()
    return [int(row["pid"]) for row in rows]


class Deployment:
    """The service on ``job_store``: its replicas started, its database fresh."""

    def __init__(
        self,
        job_store: JobStoreSpec,
        env: Mapping[str, str],
        stores: Path,
        workdir: Path,
        *,
        repo: Path = REPO,
        pg_server: str = DEFAULT_PG_SERVER,
    ) -> None:
        self.job_store = job_store
        self._env = dict(env)
        self._stores = stores
        self._workdir = workdir
        self._repo = repo
        self._pg_server = pg_server.rstrip("/")
        self._database: str | None = None
        self.services: list[ServiceProcess] = []

    def __enter__(self) -> Deployment:
        try:
            env = dict(self._env)
            if self.job_store.kind == "memory":
                env["RP_DATABASE_URL"] = "memory"
            elif self.job_store.kind == "postgresql":
                self._database = f"rp_bench_{uuid.uuid4().hex[:12]}"
                asyncio.run(_admin(self._pg_server, f'CREATE DATABASE "{self._database}"'))
                env["RP_DATABASE_URL"] = f"{self._pg_server}/{self._database}"
            # One after the other: the first creates the schema, the next finds it.
            for number in range(self.job_store.replicas):
                log_path = self._workdir / f"service-{self.job_store.name}-r{number}.log"
                replica_env = {**env, "RP_REPLICA_NAME": f"bench-r{number}"}
                service = ServiceProcess(replica_env, self._stores, log_path, repo=self._repo)
                self.services.append(service.__enter__())
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def base_urls(self) -> list[str]:
        return [service.base_url for service in self.services]

    @property
    def pids(self) -> list[int]:
        return [service.pid for service in self.services]

    def database_cpu(self) -> dict[int, float] | None:
        """CPU seconds of each PostgreSQL backend serving this deployment's database.

        The backends are the replicas' pooled connections, so they live as long
        as the replicas; ``None`` when the store is not PostgreSQL.
        """
        if self._database is None:
            return None
        pids = asyncio.run(_backend_pids(self._pg_server, self._database))
        return {pid: cpu_seconds(pid) for pid in pids}

    def store_description(self) -> str:
        """Where the first replica says its jobs live (``/readyz``), to show what ran."""
        with urllib.request.urlopen(f"{self.base_urls[0]}/readyz", timeout=10) as response:
            body: dict[str, str] = json.load(response)
        return body.get("store", "?")

    def settled_by_replica(self) -> list[int]:
        """Images each replica settled since it started, from its /metrics."""
        counts = []
        for base in self.base_urls:
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
                text = response.read().decode()
            counts.append(round(sum(float(value) for value in _PROCESSED.findall(text))))
        return counts

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        if self._database is not None:
            database, self._database = self._database, None
            # FORCE: a replica that did not stop cleanly may leave connections behind.
            drop = f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
            try:
                asyncio.run(_admin(self._pg_server, drop))
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"bench: could not drop database {database}: {exc}", file=sys.stderr)
