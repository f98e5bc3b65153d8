"""The whole service against hostile hosts: each bad image fails clearly; the service lives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from service.api import keys
from service.config import Settings
from tests.support.fault_host import FaultHost
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import wait_for_status


async def errors_by_url(client: TestClient[Any, Any], job_id: int) -> dict[str, str | None]:
    detail = await (await client.get(f"/api/jobs/{job_id}", params={"limit": "1000"})).json()
    return {row["url"]: row["error"] for row in detail["results"]}


async def test_hostile_images_each_fail_with_a_clear_reason_and_the_service_stays_up(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    fault_host: FaultHost,
) -> None:
    settings = make_settings(
        max_image_bytes=1_000_000, read_timeout=1.0, total_timeout=3.0, retry_attempts=2
    )
    client = await make_client(settings)
    urls = {
        "never": fault_host.url("/never"),
        "huge": fault_host.url("/stream/close/1000000000"),
        "bomb": fault_host.url("/bomb"),
        "truncated": image_host.url("/truncated/300x200.jpg"),
        "html": image_host.url("/html"),
        "reset": fault_host.url("/reset"),
        "loop": fault_host.url("/loop"),
        "ftp": fault_host.url("/ftp"),
        "good": image_host.url("/img/30x20.png"),
    }
    job_id = await submit(client, visit("S00339218", *urls.values()))
    assert (await wait_for_status(client, job_id))["status"] == "failed"

    errors = await errors_by_url(client, job_id)
    reason = {name: errors[url] for name, url in urls.items()}
    assert reason["never"] == "timed out after 2 attempts"
    assert reason["huge"] == "image larger than 1000000 bytes"
    assert reason["bomb"] == "image too large: 30000x30000"
    assert str(reason["truncated"]).startswith("corrupt or truncated image")
    assert reason["html"] == "not an image (unrecognised format)"
    assert str(reason["reset"]).startswith(("connection broken mid-body", "connection error"))
    assert str(reason["reset"]).endswith("after 2 attempts")
    assert reason["loop"] == "too many redirects (more than 5)"
    assert str(reason["ftp"]).startswith("redirect to a non-http(s) URL")
    assert reason["good"] is None
    assert fault_host.sent["/stream/close/1000000000"] < 50_000_000

    # Still serving: health answers and a fresh job completes.
    assert (await client.get("/healthz")).status == 200
    again = await submit(client, visit("S00339218", image_host.url("/img/12x8.webp")))
    assert (await wait_for_status(client, again))["status"] == "completed"


async def test_private_destinations_are_refused_by_default(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
) -> None:
    client = await make_client(make_settings(allow_private_networks=False))
    url = image_host.url("/img/30x20.png")
    job_id = await submit(client, visit("S00339218", url))
    body = await wait_for_status(client, job_id)
    assert body["status"] == "failed"
    assert (await errors_by_url(client, job_id))[url] == "destination address not allowed"
    assert image_host.requests == []


async def test_flaky_host_is_retried_to_success(
    client: TestClient[Any, Any], fault_host: FaultHost
) -> None:
    job_id = await submit(client, visit("S00339218", fault_host.url("/flaky/job/2")))
    assert (await wait_for_status(client, job_id))["status"] == "completed"
    assert fault_host.requests == ["/flaky/job/2"] * 3


async def test_a_backing_off_image_does_not_hold_the_only_worker(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    fault_host: FaultHost,
) -> None:
    # One worker; the first image is told to come back in 60 s.
    settings = make_settings(max_in_flight=1, retry_max_delay=60.0)
    client = await make_client(settings)
    waiting = await submit(client, visit("S00339218", fault_host.url("/retry-after/w/60")))
    pipeline = client.app[keys.PIPELINE]
    deadline = time.monotonic() + 10
    while fault_host.requests != ["/retry-after/w/60"] or pipeline.in_flight:
        assert time.monotonic() < deadline, "the first attempt never finished"
        await asyncio.sleep(0.01)

    other = await submit(client, visit("S00339218", image_host.url("/img/30x20.png")))
    assert (await wait_for_status(client, other))["status"] == "completed"
    status = await client.get("/api/status", params={"jobid": str(waiting)})
    assert (await status.json())["status"] == "ongoing"
    assert pipeline.queued_images == 1  # still counted while it backs off
