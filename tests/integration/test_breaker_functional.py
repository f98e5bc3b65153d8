"""The circuit breaker in the whole service: one job cannot poison an origin for another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from service.config import Settings
from service.net.downloader import CIRCUIT_OPEN
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import wait_for_status


async def errors_by_url(client: TestClient[Any, Any], job_id: int) -> dict[str, str | None]:
    detail = await (await client.get(f"/api/jobs/{job_id}", params={"limit": "1000"})).json()
    return {row["url"]: row["error"] for row in detail["results"]}


async def test_one_jobs_failing_urls_do_not_fail_another_jobs_images_on_the_same_origin(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    # The default threshold; a cool-down long enough that an origin-wide circuit
    # opened by job A would still refuse job B.
    settings = make_settings(circuit_breaker_cool_down=300.0)
    client = await make_client(settings)
    failing = [image_host.url(f"/status/503?a={number}") for number in range(25)]
    a = await submit(client, visit("S00339218", *failing))
    assert (await wait_for_status(client, a))["status"] == "failed"
    a_errors = await errors_by_url(client, a)
    # A's circuit opened for A: its later tries were refused.
    assert CIRCUIT_OPEN in a_errors.values()
    assert set(a_errors.values()) <= {CIRCUIT_OPEN, "HTTP 503 after 3 attempts"}

    # Same scheme, host and port; other paths.
    good = [image_host.url(f"/img/{8 + number}x8.png") for number in range(5)]
    b = await submit(client, visit("S00339218", *good))
    assert (await wait_for_status(client, b))["status"] == "completed"
    assert set((await errors_by_url(client, b)).values()) == {None}
