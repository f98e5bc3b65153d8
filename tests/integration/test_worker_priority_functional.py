"""Pool workers run at a lower CPU priority than the event loop (``worker_niceness``)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServiceProcess, descendants


def _nice(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name start at field 3 (state); nice is field 19.
    return int(stat.rsplit(")", 1)[1].split()[16])


@pytest.fixture
def niced_service(stores_csv: Path) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        {"RP_STORES": str(stores_csv), "RP_WORKERS": "2", "RP_WORKER_NICENESS": "7"}
    )
    try:
        yield service
    finally:
        if service.process.poll() is None:
            # SIGTERM first: after a SIGKILL the orphaned forkserver keeps the
            # output pipes open and kill()'s communicate() would never return.
            service.process.send_signal(signal.SIGTERM)
            try:
                service.stop(within=30)
            finally:
                service.kill()


def test_pool_workers_are_niced_and_the_service_is_not(niced_service: ServiceProcess) -> None:
    niced_service.wait_healthy()
    main = niced_service.process.pid
    main_nice = _nice(main)
    assert main_nice is not None
    # Startup pings the pool, so at least one worker exists by now.
    deadline = time.monotonic() + 10
    niced: list[int] = []
    while not niced and time.monotonic() < deadline:
        niced = [pid for pid in descendants(main) if _nice(pid) == main_nice + 7]
        time.sleep(0.05)
    assert niced, "no pool worker runs at the configured niceness"
    assert _nice(main) == main_nice
