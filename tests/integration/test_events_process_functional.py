"""Live events from real service processes: SIGTERM, and replicas sharing PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.processes import ServiceProcess
from tests.support.sse import Block, SseReader

pytestmark = pytest.mark.slow

Start = Callable[..., Any]


@pytest.fixture
async def start_service(stores_csv: Path) -> AsyncIterator[Start]:
    started: list[ServiceProcess] = []

    async def start(**settings: str) -> ServiceProcess:
        env = {
            "RP_STORES": str(stores_csv),
            "RP_WORKERS": "1",
            "RP_GPU_DELAY_MIN": "0",
            "RP_GPU_DELAY_MAX": "0",
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


async def test_sigterm_ends_open_streams_at_once_with_a_retry_hint(
    start_service: Start, image_host: ImageHost
) -> None:
    # A long grace, and an image that never arrives (nor times out): the drain lasts 60 s.
    service: ServiceProcess = await start_service(
        shutdown_grace="60", read_timeout="120", total_timeout="120"
    )
    async with aiohttp.ClientSession(service.base_url) as session:
        job_id = await submit(session, visit("RP00001", image_host.url("/hold/4x4.png")))
        async with (
            session.get("/api/events") as every,
            session.get(f"/api/jobs/{job_id}/events") as one,
        ):
            readers = [SseReader(every), SseReader(one)]
            for reader in readers:
                assert (await reader.event()).id == f"{job_id}-0-0"
            service.process.send_signal(signal.SIGTERM)
            # Both end well inside the drain: the reader's deadline is 15 s.
            endings = [await reader.rest() for reader in readers]
        assert service.process.poll() is None, "the drain should still be running"
        for blocks in endings:
            assert blocks[-1] == Block(retry=1000, comments=["shutdown"])
        # While it drains, a new stream is refused: clients go to another replica.
        async with session.get("/api/events") as refused:
            assert refused.status == 503
            assert await refused.json() == {"error": "service is shutting down"}


@pytest.mark.postgres
async def test_a_replica_streams_a_job_another_replica_processes(
    start_service: Start, image_host: ImageHost, postgres_url: str
) -> None:
    shared = {"database_url": postgres_url, "max_in_flight": "8"}
    worker = await start_service(**shared)
    fast = [image_host.url(f"/img/{4 + n}x4.png") for n in range(2)]
    held = [image_host.url(f"/hold/{4 + n}x5.png") for n in range(3)]
    async with aiohttp.ClientSession(worker.base_url) as one:
        job_id = await submit(one, visit("RP00001", *fast, *held))
        # Every held image is claimed by the first replica before the second starts,
        # so the second never records a result of this job.
        deadline = time.monotonic() + 15
        while sum(path.startswith("/hold/") for path in image_host.requests) < 3:
            assert time.monotonic() < deadline, image_host.requests
            await asyncio.sleep(0.02)
        watcher = await start_service(**shared)
        async with (
            aiohttp.ClientSession(watcher.base_url) as two,
            two.get(f"/api/jobs/{job_id}/events") as one_job,
            two.get("/api/events") as every_job,
        ):
            job_reader, every_reader = SseReader(one_job), SseReader(every_job)
            first = await job_reader.event()
            assert (first.event, first.id) == ("progress", f"{job_id}-0-2")
            assert first.json() == {"job_id": job_id, "done": 2, "failed": 0, "total": 5}
            assert (await every_reader.event()).id == f"{job_id}-0-2"
            image_host.release()
            # The watcher learns the rest from the database, once a second at most.
            done = (await job_reader.rest())[-1]
            assert (done.event, done.id) == ("done", f"{job_id}-0-5")
            assert done.json() == {"status": "completed", "job_id": job_id}
            while (block := await every_reader.event()).event != "done":
                assert block.json()["job_id"] == job_id
            assert block.id == f"{job_id}-0-5"
        # Resuming on the other replica with the last id seen still ends with done.
        headers = {"Last-Event-ID": f"{job_id}-0-2"}
        async with one.get(f"/api/jobs/{job_id}/events", headers=headers) as resumed:
            blocks = await SseReader(resumed).rest()
        assert [(block.event, block.id) for block in blocks] == [("done", f"{job_id}-0-5")]
