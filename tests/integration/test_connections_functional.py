"""Client connections over raw sockets: header and body timeouts (408), keep-alive timeout, the cap.

The service runs on ``create_runner``, the runner ``serve`` uses, on 127.0.0.1. The
timeouts are shrunk; the only timing asserted is "before a generous deadline".
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from service.api.connections import GuardedRequestHandler, GuardedServer, ServiceRunner
from service.app import create_app, create_runner
from service.config import Settings
from service.logging_setup import configure_logging, stop_logging
from tests.support.image_host import ImageHost
from tests.support.jobs import payload, visit
from tests.support.polling import eventually

# Far longer than any timeout the tests set: what "at once" and "eventually" wait for.
DEADLINE = 10.0
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[ServiceRunner]:
    runner = create_runner(create_app(settings))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def connection(
    runner: ServiceRunner,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
    try:
        yield reader, writer
    finally:
        writer.close()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the service sends until it closes; fails if it is still open at the deadline."""
    received = b""
    try:
        async with asyncio.timeout(DEADLINE):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass  # a close with our bytes unread resets; what arrived before still counts
    except TimeoutError:
        raise AssertionError(f"still open after {DEADLINE}s; received {received!r}") from None
    return received


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response with a Content-Length body, leaving the connection open."""
    async with asyncio.timeout(DEADLINE):
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        assert length, head
        body = await reader.readexactly(int(length[1]))
    return int(head.split(b" ", 2)[1]), body


def status_and_body(answer: bytes) -> tuple[int, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close\r\n" in head.lower() + b"\r\n", head
    return int(head.split(b" ", 2)[1]), json.loads(body)


def metric(text: bytes, name: str) -> float:
    found = re.search(rf"(?m)^{name} (\S+)$", text.decode())
    assert found, f"{name} not in /metrics"
    return float(found[1])


async def test_a_connection_that_sends_nothing_gets_408_and_is_closed(
    make_settings: Callable[..., Settings],
) -> None:
    # aiohttp's idle timer would close it too, silently and only after keepalive_timeout.
    settings = make_settings(header_timeout=0.5, keepalive_timeout=60.0)
    async with serving(settings) as runner:
        async with connection(runner) as (reader, _):
            answer = await read_until_closed(reader)
        assert status_and_body(answer) == (
            408,
            {"error": "request headers not received within 0.5 s"},
        )
        async with connection(runner) as (reader, writer):
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            _, text = await read_response(reader)
    assert metric(text, "retail_pulse_header_timeouts_total") == 1


async def test_a_half_sent_header_gets_408_and_is_closed(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(header_timeout=0.5, keepalive_timeout=60.0)
    async with serving(settings) as runner, connection(runner) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = await read_until_closed(reader)
    assert status_and_body(answer)[0] == 408


async def test_a_header_trickling_in_is_cut_at_the_timeout_however_steady(
    make_settings: Callable[..., Settings],
) -> None:
    # Slowloris: each byte arrives well within the timeout; the whole header never does.
    settings = make_settings(header_timeout=0.5, keepalive_timeout=60.0)
    async with serving(settings) as runner, connection(runner) as (reader, writer):

        async def trickle() -> None:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            with contextlib.suppress(ConnectionError):
                while True:
                    await asyncio.sleep(0.05)
                    writer.write(b"a")
                    await writer.drain()

        trickling = asyncio.create_task(trickle())
        try:
            answer = await read_until_closed(reader)
        finally:
            trickling.cancel()
    assert status_and_body(answer)[0] == 408


async def test_the_header_timer_runs_again_for_the_next_request_on_a_kept_alive_connection(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(header_timeout=0.5, keepalive_timeout=60.0)
    async with serving(settings) as runner, connection(runner) as (reader, writer):
        writer.write(HEALTHZ)
        assert (await read_response(reader))[0] == 200
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        answer = await read_until_closed(reader)
    assert status_and_body(answer)[0] == 408


async def test_an_idle_kept_alive_connection_outlives_the_header_timeout(
    make_settings: Callable[..., Settings],
) -> None:
    # Between requests the keep-alive timeout applies, not the header timeout.
    settings = make_settings(header_timeout=0.3, keepalive_timeout=60.0)
    async with serving(settings) as runner, connection(runner) as (reader, writer):
        writer.write(HEALTHZ)
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(1.0)  # the idle time under test, not synchronisation
        writer.write(HEALTHZ)
        assert (await read_response(reader))[0] == 200


async def test_a_steady_request_whose_body_takes_longer_than_the_header_timeout_is_served(
    make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    # The timer stops once the headers are in: the body upload is not its business.
    settings = make_settings(header_timeout=0.5, keepalive_timeout=60.0)
    body = json.dumps(payload(visit("RP00001", image_host.url("/img/10x10.jpg")))).encode()
    body += b" " * 200_000  # JSON allows trailing whitespace: a large, valid body
    head = (
        b"POST /api/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    async with serving(settings) as runner, connection(runner) as (reader, writer):
        for start in range(0, len(head), 20):  # headers in pieces, well within the timeout
            writer.write(head[start : start + 20])
            await writer.drain()
            await asyncio.sleep(0.01)
        chunk = len(body) // 15 + 1
        for start in range(0, len(body), chunk):  # the body over about 1.5 s
            writer.write(body[start : start + chunk])
            await writer.drain()
            await asyncio.sleep(0.1)
        status, answer = await read_response(reader)
    assert status == 201, answer


SUBMIT_HEAD = (
    b"POST /api/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n"
)


async def test_a_body_that_stops_midway_gets_408_and_the_connection_is_closed(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(body_timeout=0.5, keepalive_timeout=60.0)
    async with serving(settings) as runner, connection(runner) as (reader, writer):
        writer.write(SUBMIT_HEAD + b'{"count": 1, "visits": [')
        answer = await read_until_closed(reader)
    assert status_and_body(answer) == (408, {"error": "request body not received within 0.5 s"})


async def test_a_body_trickling_in_is_cut_at_the_body_timeout_however_steady(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(body_timeout=0.5, keepalive_timeout=60.0)

    async def trickle(writer: asyncio.StreamWriter) -> None:
        # A byte every 50 ms: 1,000 bytes would take 50 s, and each byte resets no timer.
        with contextlib.suppress(ConnectionError):
            for _ in range(1000):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.05)

    async with serving(settings) as runner, connection(runner) as (reader, writer):
        writer.write(SUBMIT_HEAD)
        sender = asyncio.create_task(trickle(writer))
        try:
            answer = await read_until_closed(reader)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    assert status_and_body(answer) == (408, {"error": "request body not received within 0.5 s"})


async def test_an_idle_kept_alive_connection_is_closed_after_keepalive_timeout(
    make_settings: Callable[..., Settings],
) -> None:
    # aiohttp's own default would keep it for an hour.
    settings = make_settings(header_timeout=60.0, keepalive_timeout=0.5)
    async with serving(settings) as runner, connection(runner) as (reader, writer):
        writer.write(HEALTHZ)
        assert (await read_response(reader))[0] == 200
        assert await read_until_closed(reader) == b""


@pytest.mark.usefixtures("restore_root_logging")
async def test_connections_past_max_connections_are_refused_at_once_and_counted(
    make_settings: Callable[..., Settings],
) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    settings = make_settings(max_connections=3)
    async with serving(settings) as runner, contextlib.AsyncExitStack() as held:
        accepted = [await held.enter_async_context(connection(runner)) for _ in range(3)]
        for reader, writer in accepted:  # each answers, so each is counted in
            writer.write(HEALTHZ)
            assert (await read_response(reader))[0] == 200
        for _ in range(3):
            async with connection(runner) as (reader, _):
                answer = await read_until_closed(reader)
            assert status_and_body(answer) == (
                503,
                {"error": "too many open connections; try again shortly"},
            )

        reader, writer = accepted[0]
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        _, text = await read_response(reader)
        assert metric(text, "retail_pulse_connections_refused_total") == 3
        assert metric(text, "retail_pulse_connections_open") == 3

        accepted[1][1].close()  # a slot frees once the service sees this one close

        async def served() -> bool | None:
            async with connection(runner) as (reader, writer):
                writer.write(HEALTHZ)
                try:
                    return True if (await read_response(reader))[0] == 200 else None
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None

        await eventually(served, within=DEADLINE)
    stop_logging()
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    refusals = [entry for entry in entries if entry["message"].startswith("refused")]
    # Three refusals within a few seconds: one line, not one per connection.
    assert [(entry["level"], entry["message"]) for entry in refusals] == [
        ("warning", "refused 1 connection(s) with 503: max_connections (3) are open")
    ]


async def test_the_runner_serves_through_the_guarded_handler(
    make_settings: Callable[..., Settings],
) -> None:
    # What the hook relies on, so an aiohttp upgrade that moves it fails here by name.
    assert "_waiter" in web.RequestHandler.__slots__
    assert callable(web.RequestHandler.keep_alive)
    settings = make_settings(keepalive_timeout=7.0)
    async with serving(settings) as runner:
        server = runner.server
        assert isinstance(server, GuardedServer)
        assert isinstance(server._kwargs, dict)
        handler = server()
        assert isinstance(handler, GuardedRequestHandler)
        assert handler.keepalive_timeout == 7.0
        assert handler._waiter is None  # no connection yet, so not waiting for a request
