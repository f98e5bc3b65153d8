"""Graceful shutdown with work in flight: 503 while draining, a grace period, then exit 0.

``test_process_functional`` covers an idle service stopping on SIGTERM/SIGINT;
these tests add running jobs, on the same ``ServiceProcess`` harness.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.image_host import ImageHost
from tests.support.jobs import payload, submit, visit
from tests.support.processes import REPO_ROOT, ServiceProcess, descendants, wait_until_gone

# At least the stuck image; a probe accepted just before the signal landed may join it.
SHUT_DOWN_REASON_LOG = re.compile(r"failed [1-9]\d* unfinished images: service shutting down")


@pytest.fixture
async def start_service(stores_csv: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[ServiceProcess] = []

    async def start(**settings: str) -> ServiceProcess:
        env = {
            "RP_STORES": str(stores_csv),
            "RP_WORKERS": "1",
            "RP_GPU_DELAY_MIN": "0",
            "RP_GPU_DELAY_MAX": "0",
            # Access lines would fill the stderr pipe nobody reads until exit.
            "RP_LOG_LEVEL": "warning",
            # The image host is on loopback.
            "RP_ALLOW_PRIVATE_NETWORKS": "true",
            **{f"RP_{name.upper()}": value for name, value in settings.items()},
        }
        service = ServiceProcess(env)
        started.append(service)
        await asyncio.to_thread(service.wait_healthy)
        return service

    yield start
    for service in started:
        await asyncio.to_thread(service.kill)


async def _submit_until_refused(session: aiohttp.ClientSession, url: str) -> None:
    """Submits succeed until the signal is handled, then get 503: poll for it."""
    body = payload(visit("RP00001", url))
    deadline = time.monotonic() + 10
    while True:
        async with session.post("/api/submit/", json=body) as response:
            if response.status == 503:
                assert response.headers["Retry-After"]
                assert await response.json() == {"error": "service is shutting down"}
                return
            assert response.status == 201, await response.text()
        assert time.monotonic() < deadline, "submits never refused after the signal"
        await asyncio.sleep(0.02)


async def test_sigterm_drains_running_jobs_refuses_new_ones_and_exits_cleanly(
    start_service: Callable[..., Any], image_host: ImageHost
) -> None:
    # The memory store: what the grace period cannot finish is failed, since no
    # later start would resume it.
    service: ServiceProcess = await start_service(shutdown_grace="4", database_url="memory")
    workers = descendants(service.process.pid)
    assert workers, "the pool's worker processes should be running"
    async with aiohttp.ClientSession(service.base_url) as session:
        # One job can finish within the grace period, the other cannot.
        quick = image_host.url("/slow/1/6x4.png")
        stuck = image_host.url("/slow/120/6x4.png")
        quick_id = await submit(session, visit("RP00001", quick))
        await submit(session, visit("RP00001", stuck))
        async with session.get("/api/status", params={"jobid": str(quick_id)}) as response:
            assert (await response.json())["status"] == "ongoing"

        service.process.send_signal(signal.SIGTERM)

        # Still listening during the grace period, but refusing new work...
        await _submit_until_refused(session, quick)
        # ...while in-flight work finishes and status keeps answering.
        deadline = time.monotonic() + 10
        while True:
            async with session.get("/api/status", params={"jobid": str(quick_id)}) as response:
                assert response.status == 200
                if (await response.json())["status"] == "completed":
                    break
            assert time.monotonic() < deadline, "quick job never completed during the grace"
            await asyncio.sleep(0.02)

    code, _, stderr = await asyncio.to_thread(service.stop)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    # The stuck image was failed when the grace period ran out.
    assert SHUT_DOWN_REASON_LOG.search(stderr)
    assert await wait_until_gone(workers) == set()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_second_signal_cuts_the_grace_short(
    start_service: Callable[..., Any], image_host: ImageHost, store: str, tmp_path: Path
) -> None:
    # A grace far beyond the stop deadline: only the second signal can end it in time.
    database_url = "memory" if store == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
    service: ServiceProcess = await start_service(shutdown_grace="300", database_url=database_url)
    workers = descendants(service.process.pid)
    async with aiohttp.ClientSession(service.base_url) as session:
        stuck = image_host.url("/slow/120/6x4.png")
        await submit(session, visit("RP00001", stuck))
        service.process.send_signal(signal.SIGTERM)
        await _submit_until_refused(session, "http://127.0.0.1:9/a.jpg")
    service.process.send_signal(signal.SIGINT)
    code, _, stderr = await asyncio.to_thread(service.stop)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    # Only the memory store fails the image; a durable one keeps it queued.
    assert bool(SHUT_DOWN_REASON_LOG.search(stderr)) is (store == "memory")
    assert await wait_until_gone(workers) == set()


async def test_sigterm_with_a_durable_store_leaves_unfinished_work_for_the_next_start(
    start_service: Callable[..., Any], image_host: ImageHost, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    service: ServiceProcess = await start_service(shutdown_grace="1", database_url=database_url)
    async with aiohttp.ClientSession(service.base_url) as session:
        # Held by the image host until the test releases it: never done in this run.
        held_id = await submit(session, visit("RP00001", image_host.url("/hold/6x4.png")))
        await eventually_requested(image_host, "/hold/6x4.png")
        service.process.send_signal(signal.SIGTERM)
        await _submit_until_refused(session, image_host.url("/img/6x4.png"))
    code, _, stderr = await asyncio.to_thread(service.stop)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert not SHUT_DOWN_REASON_LOG.search(stderr)

    # The next start resumes the job; new ids keep counting up.
    image_host.release()
    again: ServiceProcess = await start_service(database_url=database_url)
    async with aiohttp.ClientSession(again.base_url) as session:
        deadline = time.monotonic() + 30
        while True:
            async with session.get("/api/status", params={"jobid": str(held_id)}) as response:
                assert response.status == 200
                if (await response.json())["status"] == "completed":
                    break
            assert time.monotonic() < deadline, "the resumed job never completed"
            await asyncio.sleep(0.05)
        later = await submit(session, visit("RP00001", image_host.url("/img/6x4.png")))
        assert later > held_id


async def eventually_requested(image_host: ImageHost, path: str) -> None:
    deadline = time.monotonic() + 10
    while path not in image_host.requests:
        assert time.monotonic() < deadline, f"{path} was never requested"
        await asyncio.sleep(0.02)


def test_port_in_use_is_a_one_line_error(stores_csv: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "service"],
            check=False,
            cwd=REPO_ROOT,
            env={
                "PATH": "/usr/bin:/bin",
                "RP_HOST": "127.0.0.1",
                "RP_PORT": str(port),
                "RP_STORES": str(stores_csv),
                "RP_WORKERS": "1",
                "RP_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    # Log records before it (the store's schema migrated) are JSON; the error is one line.
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("{")]
    assert lines == [f"retail-pulse: cannot listen on 127.0.0.1:{port}: Address already in use"]
