"""A 201 means the job will finish: SIGKILL the real service mid-job, start it again on the
same store, and every image ends with exactly one result, the right one."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

IMAGES = 60
Start = Callable[..., Any]


@pytest.fixture
async def start_service(stores_csv: Path) -> AsyncIterator[Start]:
    started: list[ServiceProcess] = []

    async def start(database_url: str, **settings: str) -> ServiceProcess:
        env = {
            "RP_STORES": str(stores_csv),
            "RP_DATABASE_URL": database_url,
            "RP_WORKERS": "1",
            "RP_MAX_IN_FLIGHT": "4",
            # Slow enough that a kill lands mid-job.
            "RP_GPU_DELAY_MIN": "0.05",
            "RP_GPU_DELAY_MAX": "0.1",
            # Nobody reads the pipes until exit: keep the logs short.
            "RP_LOG_LEVEL": "warning",
            **{f"RP_{name.upper()}": value for name, value in settings.items()},
        }
        service = ServiceProcess(env)
        started.append(service)
        await asyncio.to_thread(service.wait_healthy)
        return service

    yield start
    for service in started:
        await asyncio.to_thread(service.kill)


async def progress(session: aiohttp.ClientSession, job_id: int) -> dict[str, Any]:
    async with session.get(f"/api/jobs/{job_id}", params={"limit": "1000"}) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def wait_until(
    session: aiohttp.ClientSession, job_id: int, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    for _ in range(600):
        body = await progress(session, job_id)
        if ready(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never got there: {body['progress']}")


def job_urls(image_host: ImageHost) -> list[str]:
    # Distinct sizes, so each result can be checked against its own image.
    return [image_host.url(f"/img/{10 + n}x{5 + n % 7}.png") for n in range(IMAGES)]


async def crash_mid_job_and_resume(
    start_service: Start, image_host: ImageHost, database_url: str
) -> tuple[int, int]:
    urls = job_urls(image_host)
    service = await start_service(database_url)
    async with aiohttp.ClientSession(service.base_url) as session:
        job_id = await submit(session, visit("RP00001", *urls))
        body = await wait_until(session, job_id, lambda b: b["progress"]["done"] >= 5)
        assert body["status"] == "ongoing"
    await asyncio.to_thread(service.kill)  # SIGKILL, the whole process group

    again = await start_service(database_url)
    async with aiohttp.ClientSession(again.base_url) as session:
        body = await wait_until(session, job_id, lambda b: b["status"] != "ongoing")
        assert body["status"] == "completed", body
        assert body["progress"] == {"total": IMAGES, "done": IMAGES, "failed": 0}
        results = body["results"]
        assert [row["url"] for row in results] == urls
        for n, row in enumerate(results):
            assert (row["width"], row["height"]) == (10 + n, 5 + n % 7)
            assert row["perimeter"] == 2 * (15 + n + n % 7)
        later = await submit(session, visit("RP00001", urls[0]))
    return job_id, later


async def test_a_sigkill_mid_job_loses_nothing_on_sqlite(
    start_service: Start, image_host: ImageHost, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.db"
    job_id, later = await crash_mid_job_and_resume(start_service, image_host, f"sqlite:///{path}")
    assert later > job_id
    with sqlite3.connect(path) as connection:
        settled = connection.execute(
            "SELECT count(*), count(DISTINCT idx) FROM images WHERE job_id = ? AND state = 2",
            (job_id,),
        ).fetchone()
        done = connection.execute("SELECT done FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert settled == (IMAGES, IMAGES)  # one result row per image
    assert done == (IMAGES,)  # counted once each, redone images included


@pytest.mark.postgres
async def test_a_sigkill_mid_job_loses_nothing_on_postgresql(
    start_service: Start, image_host: ImageHost, postgres_url: str
) -> None:
    # A short claim_timeout: the killed replica's claims go back to the queue soon.
    job_id, later = await crash_mid_job_and_resume(
        lambda url: start_service(url, claim_timeout="1.5"), image_host, postgres_url
    )
    assert later > job_id
    connection = await asyncpg.connect(postgres_url)
    try:
        settled = await connection.fetchrow(
            "SELECT count(*), count(DISTINCT idx) FROM images WHERE job_id = $1 AND state = 2",
            job_id,
        )
        done = await connection.fetchval("SELECT done FROM jobs WHERE id = $1", job_id)
    finally:
        await connection.close()
    assert tuple(settled) == (IMAGES, IMAGES)
    assert done == IMAGES
