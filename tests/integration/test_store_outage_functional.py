"""The job store going away while the service runs: 503s (never a 500 or a wrong 400 {}),
settled results kept and retried, and recovery without a restart."""

from __future__ import annotations

import asyncio
import re
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.jobs import post_job, submit, visit
from tests.support.polling import eventually
from tests.support.postgres import PG_SERVER
from tests.support.processes import ServiceProcess
from tests.support.tcp_proxy import TcpProxy


async def requested(image_host: ImageHost, path: str) -> None:
    async def seen() -> bool | None:
        return True if path in image_host.requests else None

    await eventually(seen, within=10)


async def unsaved(http: Any) -> int:
    async with http.get("/metrics") as response:
        text = await response.text()
    match = re.search(r"^retail_pulse_images_unsaved (\S+)$", text, re.M)
    assert match, "no unsaved-images gauge"
    return int(float(match[1]))


async def status_code(http: Any, path: str, **params: str) -> int:
    async with http.get(path, params=params) as response:
        await response.read()
        return response.status


async def assert_store_refused(http: Any) -> None:
    """A submit and the readiness probe answer 503, naming the store."""
    async with http.post(
        "/api/submit/", json={"count": 1, "visits": [visit("RP00001", "http://127.0.0.1:9/a.jpg")]}
    ) as response:
        assert response.status == 503, await response.text()
        assert response.headers["Retry-After"]
        assert "job store" in (await response.json())["error"]
    async with http.get("/readyz") as response:
        assert response.status == 503
        assert "job store" in (await response.json())["reason"]


@pytest.mark.postgres
async def test_postgresql_going_away_gives_503s_and_recovers_without_a_restart(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    postgres_url: str,
) -> None:
    server = urlsplit(PG_SERVER)
    proxy = await TcpProxy(server.hostname or "127.0.0.1", server.port or 5432).start()
    try:
        user = f"{server.username}@" if server.username else ""
        through_proxy = postgres_url.replace(server.netloc, f"{user}127.0.0.1:{proxy.port}", 1)
        client = await make_client(make_settings(database_url=through_proxy))
        job_id = await submit(client, visit("RP00001", image_host.url("/hold/5x4.png")))
        await requested(image_host, "/hold/5x4.png")

        await proxy.cut()
        await assert_store_refused(client)
        for path, params in (
            ("/api/status", {"jobid": str(job_id)}),
            (f"/api/jobs/{job_id}", {}),
            (f"/api/jobs/{job_id}/results", {"format": "csv"}),
            ("/api/jobs", {}),
        ):
            assert await status_code(client, path, **params) == 503, path

        # The held image settles while the store is away: kept, and retried.
        image_host.release()

        async def kept() -> bool | None:
            return True if await unsaved(client) == 1 else None

        await eventually(kept, within=15)

        await proxy.restore()

        async def completed() -> bool | None:
            async with client.get("/api/status", params={"jobid": str(job_id)}) as response:
                if response.status != 200:
                    return None
                return True if (await response.json())["status"] == "completed" else None

        await eventually(completed, within=30)
        assert await unsaved(client) == 0
        assert await status_code(client, "/readyz") == 200
        await submit(client, visit("RP00001", image_host.url("/img/3x3.png")))
    finally:
        await proxy.close()


@pytest.mark.slow
async def test_a_sqlite_file_that_cannot_be_written_gives_503s_and_recovers(
    stores_csv: Path, image_host: ImageHost, tmp_path: Path
) -> None:
    service = ServiceProcess(
        {
            "RP_STORES": str(stores_csv),
            "RP_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            "RP_WORKERS": "1",
            "RP_GPU_DELAY_MIN": "0",
            "RP_GPU_DELAY_MAX": "0",
            "RP_LOG_LEVEL": "warning",
        }
    )
    try:
        await asyncio.to_thread(service.wait_healthy)
        async with aiohttp.ClientSession(service.base_url) as session:
            job_id = await submit(session, visit("RP00001", image_host.url("/hold/5x4.png")))
            await requested(image_host, "/hold/5x4.png")

            # A full disk, as RLIMIT_FSIZE makes every write fail (chmod would not stop root).
            _, hard = resource.prlimit(service.process.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(service.process.pid, resource.RLIMIT_FSIZE, (0, hard))
            await assert_store_refused(session)

            # Writable again, and nothing else writing: readiness finds out by itself.
            resource.prlimit(service.process.pid, resource.RLIMIT_FSIZE, (hard, hard))

            async def ready() -> bool | None:
                return True if await status_code(session, "/readyz") == 200 else None

            await eventually(ready, within=10)

            resource.prlimit(service.process.pid, resource.RLIMIT_FSIZE, (0, hard))
            image_host.release()

            async def kept() -> bool | None:
                return True if await unsaved(session) == 1 else None

            await eventually(kept, within=15)
            # Not reported done: the result is not committed.
            async with session.get("/api/status", params={"jobid": str(job_id)}) as response:
                assert (await response.json())["status"] == "ongoing"

            resource.prlimit(service.process.pid, resource.RLIMIT_FSIZE, (hard, hard))

            async def completed() -> bool | None:
                async with session.get("/api/status", params={"jobid": str(job_id)}) as response:
                    return True if (await response.json())["status"] == "completed" else None

            await eventually(completed, within=30)
            assert await status_code(session, "/readyz") == 200
            await post_job(
                session, {"count": 1, "visits": [visit("RP00001", image_host.url("/img/3x3.png"))]}
            )
    finally:
        await asyncio.to_thread(service.kill)
