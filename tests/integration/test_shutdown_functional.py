"""Graceful shutdown of the real service process: 503 while draining, grace, exit 0, no orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.image_host import ImageHost
from tests.support.processes import descendants, kill_quietly, wait_until_gone

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """``python -m service`` on a free loopback port, its stderr kept in a file."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, stderr: Path) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{port}"
        self.stderr_path = stderr

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_exit(self, within: float) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            raise AssertionError(f"service still running after {within}s") from None


@pytest.fixture
async def start_service(
    unused_tcp_port_factory: Any, stores_csv: Path, tmp_path: Path
) -> AsyncIterator[Any]:
    started: list[ServiceProcess] = []

    async def start(**settings: str) -> ServiceProcess:
        port = unused_tcp_port_factory()
        env = {
            **os.environ,
            "RP_HOST": "127.0.0.1",
            "RP_PORT": str(port),
            "RP_STORES": str(stores_csv),
            "RP_WORKERS": "1",
            "RP_GPU_DELAY_MIN": "0",
            "RP_GPU_DELAY_MAX": "0",
            # The image host is on loopback; harmless where the setting does not exist.
            "RP_ALLOW_PRIVATE_NETWORKS": "true",
            **{f"RP_{name.upper()}": value for name, value in settings.items()},
        }
        stderr_path = tmp_path / f"service-{port}.stderr"
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service",
                cwd=REPO_ROOT,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        service = ServiceProcess(process, port, stderr_path)
        started.append(service)
        await _wait_healthy(service)
        return service

    yield start
    for service in started:
        if service.process.returncode is None:
            for pid in descendants(service.process.pid):
                kill_quietly(pid, signal.SIGKILL)
            service.process.kill()
            await service.process.wait()


async def _wait_healthy(service: ServiceProcess, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            assert service.process.returncode is None, service.stderr
            try:
                async with session.get(service.base + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, "service never became healthy"
            await asyncio.sleep(0.05)


def _payload(url: str) -> dict[str, Any]:
    return {
        "count": 1,
        "visits": [{"store_id": "RP00001", "image_url": [url], "visit_time": "t"}],
    }


async def test_sigterm_drains_running_jobs_refuses_new_ones_and_exits_cleanly(
    start_service: Any, image_host: ImageHost
) -> None:
    service: ServiceProcess = await start_service(shutdown_grace="4")
    children = descendants(service.process.pid)
    assert children, "the pool's worker processes should be running"
    async with aiohttp.ClientSession(service.base) as session:
        # One job finishes within the grace period, the other cannot.
        quick = image_host.url("/slow/1/6x4.png")
        stuck = image_host.url("/slow/120/6x4.png")
        async with session.post("/api/submit/", json=_payload(quick)) as response:
            assert response.status == 201
            quick_id = (await response.json())["job_id"]
        async with session.post("/api/submit/", json=_payload(stuck)) as response:
            assert response.status == 201
        async with session.get("/api/status", params={"jobid": str(quick_id)}) as response:
            assert (await response.json())["status"] == "ongoing"

        service.process.send_signal(signal.SIGTERM)

        # Still listening during the grace period, but refusing new work.
        deadline = time.monotonic() + 10
        while True:
            async with session.post("/api/submit/", json=_payload(quick)) as response:
                if response.status == 503:
                    assert response.headers["Retry-After"]
                    assert await response.json() == {"error": "service is shutting down"}
                    break
                assert response.status == 201
            assert time.monotonic() < deadline, "submits never refused after SIGTERM"
            await asyncio.sleep(0.02)
        # In-flight work gets to finish meanwhile, and status keeps answering.
        deadline = time.monotonic() + 10
        while True:
            async with session.get("/api/status", params={"jobid": str(quick_id)}) as response:
                assert response.status == 200
                if (await response.json())["status"] == "completed":
                    break
            assert time.monotonic() < deadline, "quick job never completed during the grace"
            await asyncio.sleep(0.02)

    assert await service.wait_exit(within=30) == 0
    stderr = service.stderr
    assert "Traceback" not in stderr
    # The stuck image was failed when the grace ran out.
    assert "failed 1 unfinished images: service shutting down" in stderr
    assert await wait_until_gone(children) == set()


async def test_sigterm_with_no_jobs_exits_at_once_without_orphans(start_service: Any) -> None:
    # A long grace: exiting within the deadline shows an idle service does not wait it out.
    service: ServiceProcess = await start_service(shutdown_grace="300")
    children = descendants(service.process.pid)
    assert children
    service.process.send_signal(signal.SIGTERM)
    assert await service.wait_exit(within=30) == 0
    assert "Traceback" not in service.stderr
    assert await wait_until_gone(children) == set()


async def test_second_signal_cuts_the_grace_short(
    start_service: Any, image_host: ImageHost
) -> None:
    service: ServiceProcess = await start_service(shutdown_grace="300")
    async with aiohttp.ClientSession(service.base) as session:
        async with session.post(
            "/api/submit/", json=_payload(image_host.url("/slow/120/6x4.png"))
        ) as response:
            assert response.status == 201
        service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:
            async with session.post("/api/submit/", json=_payload("http://127.0.0.1:9/")) as r:
                if r.status == 503:
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    service.process.send_signal(signal.SIGINT)
    assert await service.wait_exit(within=30) == 0
    assert "Traceback" not in service.stderr
    assert "failed 1 unfinished images: service shutting down" in service.stderr
