"""The downloader against misbehaving loopback hosts: caps, timeouts, redirects, retries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from io import BytesIO
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from service.config import Settings
from service.net.circuit_breaker import CircuitBreaker, CircuitState
from service.net.downloader import (
    CIRCUIT_OPEN,
    Downloader,
    FetchError,
    RetryLater,
    create_client_session,
)
from tests.support.fault_host import FaultHost
from tests.support.fetchers import fetch_retrying
from tests.support.image_host import ImageHost, build_image_host_app

MakeDownloader = Callable[..., Downloader]


@pytest.fixture
async def make_downloader(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[MakeDownloader]:
    sessions = []

    def make(**overrides: Any) -> Downloader:
        settings = make_settings(**overrides)
        session = create_client_session(settings.download)
        sessions.append(session)
        return Downloader(session, settings.download)

    yield make
    for session in sessions:
        await session.close()


async def failure(downloader: Downloader, url: str) -> str:
    with pytest.raises(FetchError) as caught:
        await fetch_retrying(downloader, url)
    return caught.value.reason


# -- byte cap, whatever the framing ---------------------------------------------


@pytest.mark.parametrize("mode", ["close", "chunked", "length", "lie-1000"])
async def test_byte_cap_holds_while_streaming_a_1_gb_body(
    make_downloader: MakeDownloader, fault_host: FaultHost, mode: str
) -> None:
    downloader = make_downloader(max_image_bytes=1_000_000)
    path = f"/stream/{mode}/1000000000"

    if mode == "lie-1000":
        # A Content-Length under the cap bounds what is read; the bytes after it
        # either go unread or make the response invalid, never an oversized read.
        try:
            assert len(await fetch_retrying(downloader, fault_host.url(path))) == 1000
        except FetchError as exc:
            assert exc.reason.startswith("bad response: Data after")
            assert len(exc.reason) < 250
    else:
        reason = await failure(downloader, fault_host.url(path))
        assert reason == "image larger than 1000000 bytes"
    # The client stopped reading early: the server never got near 1 GB out.
    assert fault_host.sent[path] < 50_000_000


async def test_body_shorter_than_its_content_length_is_a_broken_connection(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(retry_attempts=1)
    reason = await failure(downloader, fault_host.url("/stream/lie-5000/100"))
    assert reason.startswith("connection broken mid-body")
    assert reason.endswith("after 1 attempt")


async def test_body_at_the_cap_is_accepted(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(max_image_bytes=200_000)
    for mode in ("close", "chunked", "length"):
        assert (
            len(await fetch_retrying(downloader, fault_host.url(f"/stream/{mode}/200000")))
            == 200_000
        )


async def test_byte_cap_holds_on_the_decompressed_size_of_a_gzip_body(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    # 50 MB of zeros is about 50 kB gzipped: the Content-Length alone says nothing.
    downloader = make_downloader(max_image_bytes=1_000_000)
    assert await failure(downloader, fault_host.url("/gzip/50000000")) == (
        "image larger than 1000000 bytes"
    )


async def test_gzip_body_under_the_cap_arrives_decompressed(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(max_image_bytes=1_000_000)
    assert await fetch_retrying(downloader, fault_host.url("/gzip/300000")) == bytes(300_000)


async def test_cookies_an_image_host_sets_are_never_sent_back(
    make_downloader: MakeDownloader, aiohttp_server: Callable[..., Any]
) -> None:
    seen_cookies: list[str | None] = []

    async def image(request: web.Request) -> web.Response:
        seen_cookies.append(request.headers.get("Cookie"))
        response = web.Response(body=b"image bytes", content_type="image/png")
        response.set_cookie("session", "client-a-secret")
        return response

    app = web.Application()
    app.router.add_get("/{name}", image)
    server = await aiohttp_server(app)
    downloader = make_downloader()
    # By name: aiohttp's default jar already ignores cookies from IP-address hosts.
    base = f"http://localhost:{server.port}"
    for name in ("first.png", "second.png"):
        assert await fetch_retrying(downloader, f"{base}/{name}") == b"image bytes"
    assert seen_cookies == [None, None]


# -- timeouts ------------------------------------------------------------------


async def test_trickling_host_fails_on_the_total_timeout(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    # Each byte arrives well within the stall timeout; only the total timeout ends it.
    downloader = make_downloader(total_timeout=0.5, read_timeout=5.0, retry_attempts=1)
    assert await failure(downloader, fault_host.url("/trickle")) == "timed out after 1 attempt"
    assert fault_host.sent["/trickle"] > 1


async def test_host_that_never_answers_stalls_out_and_is_retried(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(read_timeout=0.2, total_timeout=5.0, retry_attempts=2)
    assert await failure(downloader, fault_host.url("/never")) == "timed out after 2 attempts"
    assert fault_host.requests == ["/never", "/never"]


async def test_connection_reset_mid_body(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(retry_attempts=2)
    reason = await failure(downloader, fault_host.url("/reset"))
    assert reason.startswith(("connection broken mid-body", "connection error"))
    assert reason.endswith("after 2 attempts")
    assert fault_host.requests == ["/reset", "/reset"]


# -- redirects -----------------------------------------------------------------


async def test_exactly_max_redirects_are_followed(
    make_downloader: MakeDownloader, image_host: ImageHost
) -> None:
    downloader = make_downloader(max_redirects=3)
    assert await fetch_retrying(downloader, image_host.url("/redirect/3/4x4.png"))
    reason = await failure(downloader, image_host.url("/redirect/4/4x4.png"))
    assert reason == "too many redirects (more than 3)"


async def test_zero_max_redirects_follows_none(
    make_downloader: MakeDownloader, image_host: ImageHost
) -> None:
    downloader = make_downloader(max_redirects=0)
    assert await failure(downloader, image_host.url("/redirect/1/4x4.png")) == "HTTP 302"
    assert image_host.requests == ["/redirect/1/4x4.png"]


async def test_redirect_loop_fails_cleanly(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(max_redirects=5)
    assert await failure(downloader, fault_host.url("/loop")) == "too many redirects (more than 5)"
    assert fault_host.requests == ["/loop"] * 6  # the first request and five redirects


async def test_redirect_to_ftp_is_refused(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    reason = await failure(make_downloader(), fault_host.url("/ftp"))
    assert reason.startswith("redirect to a non-http(s) URL")
    assert fault_host.requests == ["/ftp"]


# -- retries ---------------------------------------------------------------------


async def test_503_then_200_is_retried_to_success(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(retry_attempts=3)
    assert await fetch_retrying(downloader, fault_host.url("/flaky/a/2"))
    assert fault_host.requests == ["/flaky/a/2"] * 3


async def test_persistent_503_reports_the_attempts(
    make_downloader: MakeDownloader, image_host: ImageHost
) -> None:
    downloader = make_downloader(retry_attempts=3)
    assert await failure(downloader, image_host.url("/status/503")) == "HTTP 503 after 3 attempts"
    assert image_host.requests == ["/status/503"] * 3


@pytest.mark.parametrize("status", [408, 429, 500, 502, 504])
async def test_transient_statuses_are_retried(
    make_downloader: MakeDownloader, image_host: ImageHost, status: int
) -> None:
    downloader = make_downloader(retry_attempts=2)
    reason = await failure(downloader, image_host.url(f"/status/{status}"))
    assert reason == f"HTTP {status} after 2 attempts"
    assert len(image_host.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_other_client_errors_are_not_retried(
    make_downloader: MakeDownloader, image_host: ImageHost, status: int
) -> None:
    downloader = make_downloader(retry_attempts=3)
    assert await failure(downloader, image_host.url(f"/status/{status}")) == f"HTTP {status}"
    assert len(image_host.requests) == 1


async def test_size_limit_is_not_retried(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(retry_attempts=3, max_image_bytes=1000)
    assert await failure(downloader, fault_host.url("/stream/close/5000")) == (
        "image larger than 1000 bytes"
    )
    assert len(fault_host.requests) == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [("2", 2.0), ("3600", 5.0), ("soon", None)],
)
async def test_retry_after_seconds_is_honoured_up_to_the_cap(
    make_downloader: MakeDownloader,
    fault_host: FaultHost,
    header: str,
    expected: float | None,
) -> None:
    downloader = make_downloader(retry_base_delay=0.01, retry_max_delay=5.0)
    with pytest.raises(RetryLater) as later:
        await downloader.try_fetch(fault_host.url(f"/retry-after/k/{header}"), 1)
    assert later.value.reason == "HTTP 429"
    if expected is None:  # unusable header: ordinary jittered backoff
        assert 0 <= later.value.delay <= 0.01
    else:
        assert later.value.delay == expected
    # The next attempt gets the image.
    assert await downloader.try_fetch(fault_host.url(f"/retry-after/k/{header}"), 2)


async def test_retry_after_http_date_is_honoured(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(retry_max_delay=100.0)
    date = formatdate(time.time() + 60, usegmt=True).replace(" ", "%20")
    with pytest.raises(RetryLater) as later:
        await downloader.try_fetch(fault_host.url(f"/retry-after/d/{date}"), 1)
    assert 50 <= later.value.delay <= 61


async def test_429_with_retry_after_succeeds_through_fetch(
    make_downloader: MakeDownloader, fault_host: FaultHost
) -> None:
    downloader = make_downloader(retry_max_delay=0.05)
    assert await fetch_retrying(downloader, fault_host.url("/retry-after/f/1"))
    assert len(fault_host.requests) == 2


# -- circuit breaker ---------------------------------------------------------------


async def test_circuit_opens_per_origin_after_consecutive_failures(
    make_downloader: MakeDownloader, image_host: ImageHost, fault_host: FaultHost
) -> None:
    # No wait for the circuit: a refused image fails at once.
    downloader = make_downloader(
        retry_attempts=1,
        circuit_breaker_threshold=3,
        circuit_breaker_cool_down=300.0,
        breaker_wait_max=0.0,
    )
    failing = image_host.url("/status/503")
    for _ in range(3):
        assert await failure(downloader, failing) == "HTTP 503 after 1 attempt"
    assert len(image_host.requests) == 3

    # Open: the host is not contacted, even for a path that would work.
    assert await failure(downloader, image_host.url("/img/4x4.png")) == CIRCUIT_OPEN
    assert len(image_host.requests) == 3

    # Another host is unaffected.
    other = fault_host.url("/img").replace("127.0.0.1", "localhost")
    assert await fetch_retrying(downloader, other)


async def test_a_failing_port_does_not_open_the_circuit_for_another_port_on_the_same_host(
    make_downloader: MakeDownloader, image_host: ImageHost, aiohttp_server: Callable[..., Any]
) -> None:
    dead_requests: list[str] = []
    dead = await aiohttp_server(build_image_host_app(dead_requests))
    assert dead.host == image_host.server.host == "127.0.0.1"
    assert dead.port != image_host.server.port
    # No wait for the circuit: a refused image fails at once.
    downloader = make_downloader(
        retry_attempts=1,
        circuit_breaker_threshold=3,
        circuit_breaker_cool_down=300.0,
        breaker_wait_max=0.0,
    )
    failing = f"http://127.0.0.1:{dead.port}/status/503"
    for _ in range(3):
        assert await failure(downloader, failing) == "HTTP 503 after 1 attempt"
    assert await failure(downloader, failing) == CIRCUIT_OPEN
    assert len(dead_requests) == 3

    # Same host, other port: a different origin, still fetched from the server.
    for _ in range(3):
        data = await fetch_retrying(downloader, image_host.url("/img/4x4.png"))
        assert Image.open(BytesIO(data)).size == (4, 4)
    assert image_host.requests == ["/img/4x4.png"] * 3

    # And its successes do not close the failing origin's circuit either.
    assert await failure(downloader, failing) == CIRCUIT_OPEN
    assert len(dead_requests) == 3


async def test_hard_failures_do_not_trip_the_breaker(
    make_downloader: MakeDownloader, image_host: ImageHost
) -> None:
    downloader = make_downloader(retry_attempts=1, circuit_breaker_threshold=2)
    for _ in range(3):
        assert await failure(downloader, image_host.url("/status/404")) == "HTTP 404"
    assert await fetch_retrying(downloader, image_host.url("/img/4x4.png"))


async def test_connection_refused_is_retried(
    make_downloader: MakeDownloader, unused_tcp_port: int
) -> None:
    downloader = make_downloader(retry_attempts=2)
    reason = await failure(downloader, f"http://127.0.0.1:{unused_tcp_port}/img.png")
    assert reason.startswith("connection error")
    assert reason.endswith("after 2 attempts")


async def test_half_open_probe_reaches_the_host_and_closes_the_circuit(
    make_settings: Callable[..., Settings], fault_host: FaultHost
) -> None:
    now = [0.0]
    settings = make_settings(retry_attempts=1, breaker_wait_max=0.0)
    breaker = CircuitBreaker(threshold=2, cool_down=30.0, clock=lambda: now[0])
    async with create_client_session(settings.download) as session:
        downloader = Downloader(session, settings.download, breaker=breaker)
        flaky = fault_host.url("/flaky/probe/2")  # fails twice, then recovers
        for _ in range(2):
            assert await failure(downloader, flaky) == "HTTP 503 after 1 attempt"
        assert await failure(downloader, flaky) == CIRCUIT_OPEN
        assert len(fault_host.requests) == 2
        origin = f"http://127.0.0.1:{fault_host.port}"
        assert breaker.state(origin) is CircuitState.OPEN

        now[0] = 30.0  # cool-down over: the next request is the probe
        assert await fetch_retrying(downloader, flaky)
        assert len(fault_host.requests) == 3
        assert breaker.state(origin) is CircuitState.CLOSED
        assert await fetch_retrying(downloader, fault_host.url("/img"))
