"""Finished jobs are deleted by count and by age, and then answer exactly like unknown ones.

The durable store's file is read directly too: deleted means gone from disk, not hidden.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.config import Settings
from service.database_url import parse_database_url
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import eventually, wait_for_status


async def _assert_unknown(client: TestClient[Any, Any], job_id: int) -> None:
    status = await client.get("/api/status", params={"jobid": str(job_id)})
    never_issued = await client.get("/api/status", params={"jobid": "999999"})
    assert (status.status, await status.json()) == (400, {})
    assert (never_issued.status, await never_issued.json()) == (400, {})
    detail = await client.get(f"/api/jobs/{job_id}")
    assert detail.status == 404
    assert await detail.json() == {"error": f"job {job_id} not found"}


def _rows_on_disk(settings: Settings) -> tuple[int, int]:
    """(jobs, images) in the SQLite file, read with a connection of the test's own."""
    path = parse_database_url(settings.database_url).path
    assert isinstance(path, Path)
    with sqlite3.connect(path) as connection:
        jobs = connection.execute("SELECT count(*) FROM jobs").fetchone()[0]
        images = connection.execute("SELECT count(*) FROM images").fetchone()[0]
    return jobs, images


async def test_only_the_newest_finished_jobs_are_kept(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    settings = make_settings(max_finished_jobs=5)
    client: TestClient[Any, Any] = await make_client(settings)
    finished: list[int] = []
    for n in range(1, 41):
        job_id = await submit(client, visit("RP00001", image_host.url(f"/img/{n}x3.png")))
        await wait_for_status(client, job_id)
        finished.append(job_id)

        # The file stays flat: never far past the cap, however many jobs came before.
        async def at_most_the_cap() -> bool | None:
            return True if _rows_on_disk(settings)[0] <= 5 else None

        await eventually(at_most_the_cap, within=10)
    assert _rows_on_disk(settings) == (5, 5)
    for job_id in finished[-5:]:
        assert (await client.get(f"/api/jobs/{job_id}")).status == 200
    for job_id in (finished[0], finished[-6]):
        await _assert_unknown(client, job_id)


async def test_finished_jobs_expire_after_job_ttl(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    # The sweep runs every min(job_ttl, 60) seconds, so it deletes the job unasked.
    settings = make_settings(job_ttl=1.0)
    client: TestClient[Any, Any] = await make_client(settings)
    job_id = await submit(client, visit("RP00001", image_host.url("/img/8x8.png")))
    assert (await wait_for_status(client, job_id))["status"] == "completed"
    assert _rows_on_disk(settings) == (1, 1)

    async def deleted() -> bool | None:
        return True if _rows_on_disk(settings) == (0, 0) else None

    await eventually(deleted, within=15)
    await _assert_unknown(client, job_id)


async def test_job_ids_are_never_reused_once_every_job_is_deleted(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    settings = make_settings(job_ttl=1.0)
    client: TestClient[Any, Any] = await make_client(settings)
    first = await submit(client, visit("RP00001", image_host.url("/img/8x8.png")))
    await wait_for_status(client, first)

    async def empty() -> bool | None:
        return True if _rows_on_disk(settings) == (0, 0) else None

    await eventually(empty, within=15)
    later = await submit(client, visit("RP00001", image_host.url("/img/8x8.png")))
    assert later > first
