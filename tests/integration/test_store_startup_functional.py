"""The job store at start, as the real process meets it: URLs, locks, schemas and ``migrate``."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from service.jobs.schema import migrations
from tests.support.processes import REPO_ROOT, ServiceProcess, free_port

pytestmark = pytest.mark.slow


def run_service(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        check=False,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed start prints: the one stderr line that is not a JSON log record."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://u:hunter2@h/db", "unknown database URL 'mysql://u:***@h/db'"),
        ("sqlite://relative.db", "a SQLite URL is sqlite:///relative/path.db"),
        ("postgresql://u:hunter2@h:99999/db", "not a valid PostgreSQL URL"),
    ],
)
def test_a_bad_database_url_is_one_line_and_exit_2(url: str, said: str) -> None:
    line = one_line_error(run_service(RP_DATABASE_URL=url))
    assert said in line
    assert "hunter2" not in line


def test_a_second_process_on_one_sqlite_file_is_refused(stores_csv: Path, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = ServiceProcess({"RP_STORES": str(stores_csv), "RP_DATABASE_URL": database})
    try:
        first.wait_healthy()
        second = run_service(
            "--port", str(free_port()), RP_STORES=str(stores_csv), RP_DATABASE_URL=database
        )
        line = one_line_error(second)
        assert "is in use by another process" in line
        assert f"pid {first.process.pid}" in line
    finally:
        first.kill()


def test_a_missing_directory_is_one_line(stores_csv: Path, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'nowhere' / 'jobs.db'}"
    line = one_line_error(run_service(RP_STORES=str(stores_csv), RP_DATABASE_URL=database))
    assert "directory" in line and "does not exist" in line


LATEST = len(migrations("sqlite"))


def test_migrate_creates_the_schema_once_and_refuses_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    for _ in range(2):  # a second run finds nothing to do
        result = run_service("migrate", "--store", f"sqlite:///{path}")
        assert result.returncode == 0, result.stderr
        assert f"is at schema version {LATEST}" in result.stdout
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert {"jobs", "visits", "images", "store_failures"} <= tables
        connection.execute("PRAGMA user_version = 99")
    line = one_line_error(run_service("migrate", "--store", f"sqlite:///{path}"))
    assert f"schema is version 99, newer than this code knows ({LATEST})" in line


def test_an_older_schema_is_migrated_with_its_jobs_kept(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = migrations("sqlite")[0]
    with sqlite3.connect(path) as connection:
        connection.executescript(first.sql)
        connection.execute("PRAGMA user_version = 1")
        connection.execute(
            "INSERT INTO jobs (status, created_at, finished_at, total, done, failed, errors) "
            "VALUES ('completed', 1.0, 2.0, 0, 0, 0, '[]')"
        )
    result = run_service("migrate", "--store", f"sqlite:///{path}")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (LATEST,)
        assert connection.execute("SELECT id, status, bytes FROM jobs").fetchall() == [
            (1, "completed", 0)
        ]


@pytest.mark.postgres
def test_migrate_on_postgresql(postgres_url: str) -> None:
    result = run_service("migrate", "--store", postgres_url)
    assert result.returncode == 0, result.stderr
    assert f"is at schema version {len(migrations('postgres'))}" in result.stdout

    async def tables() -> set[str]:
        connection = await asyncpg.connect(postgres_url)
        try:
            rows = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        finally:
            await connection.close()
        return {row[0] for row in rows}

    assert {"jobs", "images", "replicas", "schema_version"} <= asyncio.run(tables())


def test_an_unreachable_postgresql_is_retried_then_one_line(stores_csv: Path) -> None:
    # Nothing listens on this port; the password must never show.
    url = f"postgresql://rp:hunter2@127.0.0.1:{free_port()}/jobs"
    result = run_service(
        RP_STORES=str(stores_csv), RP_DATABASE_URL=url, RP_DATABASE_CONNECT_TIMEOUT="1.5"
    )
    line = one_line_error(result)
    assert "cannot reach the job store postgresql://rp:***@127.0.0.1" in line
    assert "within 1.5s" in line
    assert "hunter2" not in result.stderr
    # It did wait and retry, logging each try.
    assert result.stderr.count("job store not reachable yet") >= 1
