"""The real ``python -m service`` (uvloop when installed): the open-file limit, the 408.

At start the service raises its soft open-file limit to the hard one, and says so.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

LOW = 256


def soft_and_hard_open_files(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/<pid>/limits")


def run_and_stop(stores_csv: Path, open_files: tuple[int, int]) -> tuple[tuple[int, int], str]:
    """Start the service with these limits; return its limits once healthy, and its stderr."""
    service = ServiceProcess(
        {"RP_STORES": str(stores_csv), "RP_WORKERS": "1"}, open_files=open_files
    )
    try:
        service.wait_healthy()
        limits = soft_and_hard_open_files(service.process.pid)
        service.process.send_signal(signal.SIGTERM)
        code, _, stderr = service.stop()
    finally:
        service.kill()
    assert code == 0, stderr
    return limits, stderr


def log_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit(stores_csv: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= LOW:
        pytest.skip(f"needs a finite hard open-file limit above {LOW} (it is {hard})")
    limits, stderr = run_and_stop(stores_csv, (LOW, hard))
    assert limits == (hard, hard)
    (line,) = [entry for entry in log_lines(stderr) if "open-file limit" in entry["message"]]
    assert line["level"] == "info"
    assert line["message"] == f"open-file limit: {LOW} -> {hard} (the hard limit is {hard})"
    assert (line["soft_before"], line["soft"]) == (LOW, hard)


def test_a_max_connections_the_open_file_limit_cannot_hold_is_warned_about(
    stores_csv: Path,
) -> None:
    # The hard limit is the soft one: nothing to raise, and 10,000 connections cannot fit.
    limits, stderr = run_and_stop(stores_csv, (LOW, LOW))
    assert limits == (LOW, LOW)
    warnings = [entry["message"] for entry in log_lines(stderr) if entry["level"] == "warning"]
    assert any(
        message.startswith(
            f"max_connections (10000) does not fit the open-file limit ({LOW}), which must "
        )
        for message in warnings
    ), warnings


async def healthz_on_a_kept_alive_connection(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection that got its 200 and stays open, or None when it was refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if head.startswith(b"HTTP/1.1 200 "):
        return reader, writer
    writer.close()
    return None


async def test_the_real_service_refuses_past_max_connections_and_answers_silence_with_408(
    stores_csv: Path,
) -> None:
    # The real entry point, on uvloop when it is installed (the other tests use asyncio).
    service = ServiceProcess(
        {
            "RP_STORES": str(stores_csv),
            "RP_WORKERS": "1",
            "RP_HEADER_TIMEOUT": "0.5",
            "RP_MAX_CONNECTIONS": "1",
        }
    )
    try:
        await asyncio.to_thread(service.wait_healthy)
        # Once the health check's connection is gone, one connection is admitted...
        _, held = await eventually(lambda: healthz_on_a_kept_alive_connection(service.port))
        # ...and the next one refused at once.
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        refused = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        held.close()

        async def silent_answer() -> bytes | None:
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
            try:
                answer = await asyncio.wait_for(reader.read(), 10)
            finally:
                writer.close()
            return None if answer.startswith(b"HTTP/1.1 503 ") else answer

        timed_out = await eventually(silent_answer)
    finally:
        service.kill()
    assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), refused
    assert timed_out.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), timed_out
