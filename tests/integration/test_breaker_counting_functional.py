"""What the downloader counts against an origin, and how a refused image waits, on real hosts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from service.config import Settings
from service.net.downloader import CIRCUIT_OPEN, Downloader, FetchError, create_client_session
from tests.support.fetchers import fetch_retrying
from tests.support.image_host import ImageHost
from tests.support.polling import eventually

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


async def failure(downloader: Downloader, url: str, job: int = 1) -> str:
    with pytest.raises(FetchError) as caught:
        await fetch_retrying(downloader, url, job=job)
    return caught.value.reason


# No wait for the circuit here: a refused image fails at once, so each test sees
# exactly when the circuit opens.
FAIL_AT_ONCE = {"circuit_breaker_cool_down": 300.0, "breaker_wait_max": 0.0}


@pytest.mark.parametrize("status", [408, 429])
async def test_statuses_that_do_not_say_the_host_is_unwell_do_not_count(
    make_downloader: MakeDownloader, image_host: ImageHost, status: int
) -> None:
    downloader = make_downloader(retry_attempts=1, circuit_breaker_threshold=3, **FAIL_AT_ONCE)
    for number in range(5):
        reason = await failure(downloader, image_host.url(f"/status/{status}?n={number}"))
        assert reason == f"HTTP {status} after 1 attempt"
    assert await fetch_retrying(downloader, image_host.url("/img/4x4.png"), job=1)

    # A 5xx does count, as before.
    for number in range(3):
        await failure(downloader, image_host.url(f"/status/502?n={number}"))
    assert await failure(downloader, image_host.url("/img/4x4.png")) == CIRCUIT_OPEN


async def test_an_images_retries_count_against_the_origin_once(
    make_downloader: MakeDownloader, image_host: ImageHost
) -> None:
    downloader = make_downloader(retry_attempts=3, circuit_breaker_threshold=3, **FAIL_AT_ONCE)
    for number in range(2):
        reason = await failure(downloader, image_host.url(f"/status/503?n={number}"))
        assert reason == "HTTP 503 after 3 attempts"
    assert len(image_host.requests) == 6  # six failures, from two images
    assert await fetch_retrying(downloader, image_host.url("/img/4x4.png"), job=1)


async def test_refused_connections_count_against_the_origin(
    make_downloader: MakeDownloader, unused_tcp_port: int
) -> None:
    downloader = make_downloader(retry_attempts=1, circuit_breaker_threshold=3, **FAIL_AT_ONCE)
    dead = f"http://127.0.0.1:{unused_tcp_port}"
    for number in range(3):
        assert (await failure(downloader, f"{dead}/{number}.png")).startswith("connection error")
    assert await failure(downloader, f"{dead}/3.png") == CIRCUIT_OPEN


async def test_another_jobs_images_pass_a_circuit_one_job_opened(
    make_downloader: MakeDownloader, image_host: ImageHost
) -> None:
    downloader = make_downloader(
        retry_attempts=1, circuit_breaker_threshold=3, circuit_breaker_min_jobs=2, **FAIL_AT_ONCE
    )
    for number in range(10):
        await failure(downloader, image_host.url(f"/status/503?n={number}"), job=1)
    assert await failure(downloader, image_host.url("/img/4x4.png"), job=1) == CIRCUIT_OPEN
    assert await fetch_retrying(downloader, image_host.url("/img/4x4.png"), job=2)
    # Job 2's success said the origin is well: job 1 is let through again too.
    assert await fetch_retrying(downloader, image_host.url("/img/4x4.png"), job=1)


async def test_waiting_images_spend_no_attempt_and_outlast_a_failed_probe(
    make_downloader: MakeDownloader, image_host: ImageHost
) -> None:
    # One attempt per image: any attempt spent on waiting would fail it.
    downloader = make_downloader(
        retry_attempts=1,
        circuit_breaker_threshold=2,
        circuit_breaker_min_jobs=1,
        circuit_breaker_cool_down=0.5,
        breaker_wait_max=30.0,
    )
    image_host.go_down()
    for number in range(2):
        await failure(downloader, image_host.url(f"/img/{10 + number}x10.png"))
    assert image_host.outage.refused == 2  # the circuit is open now

    urls = [image_host.url(f"/img/{20 + number}x10.png") for number in range(6)]
    fetches = [asyncio.create_task(fetch_retrying(downloader, url, job=1)) for url in urls]
    # The first probe (the longest waiting image) fails, and the circuit reopens.
    await eventually(lambda: _at_least(image_host.outage.refused, 3), within=10)
    image_host.come_back()
    results = await asyncio.gather(*fetches, return_exceptions=True)

    assert isinstance(results[0], FetchError)
    assert results[0].reason == "HTTP 503 after 1 attempt"
    # The last to come would only probe had five probes failed; it waited, then went
    # through with its one attempt.
    assert isinstance(results[-1], bytes)
    assert image_host.requests.count("/img/25x10.png") == 1


async def _at_least(count: int, least: int) -> int | None:
    return count if count >= least else None
