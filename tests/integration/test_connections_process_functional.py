"""The real ``python -m service`` (uvloop when installed): the connection cap, the 408."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow


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
