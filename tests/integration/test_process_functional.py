"""The real ``python -m service`` process: startup errors and signal shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT, ServiceProcess, descendants, pid_alive


@pytest.fixture
def service_process(stores_csv: Path) -> Iterator[ServiceProcess]:
    # A grace period far beyond stop()'s deadline: an idle service must not wait it out.
    service = ServiceProcess(
        {"RP_STORES": str(stores_csv), "RP_WORKERS": "2", "RP_SHUTDOWN_GRACE": "300"}
    )
    try:
        yield service
    finally:
        service.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_without_orphans(
    service_process: ServiceProcess, signum: signal.Signals
) -> None:
    service_process.wait_healthy()
    pid = service_process.process.pid
    workers = descendants(pid)
    assert len(workers) >= 2, "expected the pool's worker processes to be running"

    service_process.process.send_signal(signum)
    code, _, stderr = service_process.stop()

    assert code == 0, stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while any(pid_alive(worker) for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [worker for worker in workers if pid_alive(worker)], "orphaned worker processes"


def _run_service(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        check=False,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--stores", "/nonexistent/stores.csv"], {}, "store master not found"),
        ([], {"RP_PORT": "eighty"}, "port"),
        ([], {"RP_VERIFY": "sometimes"}, "verify"),
        (["--config", "/nonexistent.toml"], {}, "config file not found"),
    ],
)
def test_startup_error_is_one_line(args: list[str], env: dict[str, str], expected: str) -> None:
    result = _run_service(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


def test_bad_header_stops_startup(tmp_path: Path) -> None:
    bad = tmp_path / "stores.csv"
    bad.write_text("Area,Name,Id\n1,A,B\n")
    result = _run_service("--stores", str(bad), env={})
    assert result.returncode == 2
    assert "expected columns AreaCode,StoreName,StoreID" in result.stderr
