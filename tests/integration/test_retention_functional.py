"""Finished jobs are evicted by count and by age, and then answer exactly like unknown ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from service.api import keys
from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import wait_for_status


async def _assert_unknown(client: TestClient[Any, Any], job_id: int) -> None:
    status = await client.get("/api/status", params={"jobid": str(job_id)})
    never_issued = await client.get("/api/status", params={"jobid": "999999"})
    assert (status.status, await status.json()) == (400, {})
    assert (never_issued.status, await never_issued.json()) == (400, {})
    detail = await client.get(f"/api/jobs/{job_id}")
    assert detail.status == 404
    assert await detail.json() == {"error": f"job {job_id} not found"}


async def test_only_the_newest_finished_jobs_are_kept(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client: TestClient[Any, Any] = await make_client(make_settings(max_finished_jobs=5))
    store = client.app[keys.JOB_STORE]
    finished: list[int] = []
    for n in range(1, 41):
        job_id = await submit(client, visit("RP00001", image_host.url(f"/img/{n}x3.png")))
        await wait_for_status(client, job_id)
        finished.append(job_id)
        # Memory stays flat: never more than the cap, however many jobs came before.
        assert len(store) <= 5
    assert len(store) == 5
    for job_id in finished[-5:]:
        assert (await client.get(f"/api/jobs/{job_id}")).status == 200
    for job_id in (finished[0], finished[-6]):
        await _assert_unknown(client, job_id)


async def test_finished_jobs_expire_after_job_ttl(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    # The sweep runs every min(job_ttl, 60) seconds, so it frees the job unasked.
    client: TestClient[Any, Any] = await make_client(make_settings(job_ttl=1.0))
    store = client.app[keys.JOB_STORE]
    job_id = await submit(client, visit("RP00001", image_host.url("/img/8x8.png")))
    assert (await wait_for_status(client, job_id))["status"] == "completed"
    deadline = time.monotonic() + 15
    while len(store):
        assert time.monotonic() < deadline, "finished job never evicted"
        await asyncio.sleep(0.05)
    await _assert_unknown(client, job_id)
