"""A request that is not valid HTTP: a 400 for the client, one info line in the log."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from service.logging_setup import configure_logging, stop_logging


async def raw_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.usefixtures("restore_root_logging")
async def test_a_malformed_request_logs_one_info_line_without_a_traceback(
    aiohttp_server: Callable[..., Any],
) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    server = await aiohttp_server(web.Application())
    answer = await raw_exchange(
        server.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Probe: \x00\r\nConnection: close\r\n\r\n"
    )
    assert answer.split(b" ", 2)[1] == b"400"
    stop_logging()  # drains the writer thread
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    malformed = [entry for entry in entries if entry["logger"] == "aiohttp.server"]
    assert len(malformed) == 1, entries
    assert malformed[0]["level"] == "info"
    assert malformed[0]["message"] == (
        "malformed HTTP request from 127.0.0.1: Invalid header value char:"
    )
    assert "exception" not in malformed[0]


@pytest.mark.usefixtures("restore_root_logging")
async def test_at_level_warning_a_malformed_request_logs_nothing(
    aiohttp_server: Callable[..., Any],
) -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    server = await aiohttp_server(web.Application())
    answer = await raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nX: \x00\r\n\r\n")
    assert answer.split(b" ", 2)[1] == b"400"
    stop_logging()
    assert stream.getvalue() == ""
