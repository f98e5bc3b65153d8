"""Status polls on PostgreSQL, two replicas in one database: ongoing jobs from a shared read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.images import make_image
from tests.support.jobs import submit, visit
from tests.support.polling import wait_for_status

Client = TestClient[Any, Any]

pytestmark = pytest.mark.postgres

# Far longer than any test: what a replica read once, it keeps answering.
NEVER = 60.0


async def status_of(client: Client, job_id: int) -> str:
    async with client.get("/api/status", params={"jobid": str(job_id)}) as response:
        assert response.status == 200, await response.text()
        status: str = (await response.json())["status"]
        return status


async def detail_status(client: Client, job_id: int) -> str:
    async with client.get(f"/api/jobs/{job_id}") as response:
        assert response.status == 200, await response.text()
        status: str = (await response.json())["status"]
        return status


async def test_a_replica_answers_polls_of_an_ongoing_job_from_its_shared_read(
    postgres_url: str,
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
) -> None:
    a: Client = await make_client(make_settings(database_url=postgres_url))
    b: Client = await make_client(make_settings(database_url=postgres_url, status_refresh=NEVER))
    job_id = await submit(a, visit("RP00001", image_host.url("/hold/4x4.png")))
    assert await status_of(b, job_id) == "ongoing"

    async with a.post(f"/api/jobs/{job_id}/cancel") as response:
        assert response.status == 202
    assert await status_of(a, job_id) == "cancelled"  # a cancel drops the replica's own copy
    # B's next read of the job is a minute away: its polls still say ongoing (the lag that
    # status_refresh bounds), while its detail view reads the database.
    assert await status_of(b, job_id) == "ongoing"
    assert await detail_status(b, job_id) == "cancelled"
    image_host.release()


async def test_a_job_retried_on_another_replica_is_never_shown_ended_from_an_old_read(
    postgres_url: str,
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    aiohttp_server: Any,
) -> None:
    healthy, release = asyncio.Event(), asyncio.Event()

    async def image(request: web.Request) -> web.Response:
        if not healthy.is_set():
            return web.Response(status=503)
        await release.wait()
        return web.Response(body=make_image(7, 5, "png"), content_type="image/png")

    app = web.Application()
    app.router.add_get("/img.png", image)
    host = await aiohttp_server(app)
    a: Client = await make_client(make_settings(database_url=postgres_url, retry_attempts=1))
    b: Client = await make_client(make_settings(database_url=postgres_url, status_refresh=NEVER))
    job_id = await submit(a, visit("RP00001", str(host.make_url("/img.png"))))
    assert (await wait_for_status(a, job_id))["status"] == "failed"
    assert await status_of(b, job_id) == "failed"

    healthy.set()
    async with a.post(f"/api/jobs/{job_id}/retry") as response:
        assert response.status == 202, await response.text()
    assert await status_of(b, job_id) == "ongoing"
    release.set()
    assert (await wait_for_status(a, job_id))["status"] == "completed"
