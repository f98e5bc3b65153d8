"""By-hand measurement: what open event streams cost the service.

Run: .venv/bin/python -m tests.manual.event_streams [streams] [jobs]
Starts ``python -m service`` (memory store, no GPU wait) and an image host in this
process, opens ``streams`` connections to ``GET /api/events``, then submits ``jobs``
jobs of 20 images each and waits until every stream has seen every job's done event.
Prints the service's RSS before and after the streams opened, and its CPU time for
the same jobs with and without the streams open.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.image_host import build_image_host_app
from tests.support.jobs import payload, submit, visit
from tests.support.processes import ServiceProcess
from tests.support.sse import SseReader

ROOT = Path(__file__).resolve().parents[2]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_jobs(session: aiohttp.ClientSession, image_url: str, jobs: int) -> list[int]:
    ids = []
    for number in range(jobs):
        urls = [f"{image_url}?job={number}&n={n}" for n in range(20)]
        ids.append(await submit(session, body=payload(visit("S00339218", *urls))))
    return ids


async def wait_all_done(session: aiohttp.ClientSession, ids: list[int]) -> None:
    for job_id in ids:
        while True:
            async with session.get("/api/status", params={"jobid": str(job_id)}) as response:
                if (await response.json())["status"] != "ongoing":
                    break
            await asyncio.sleep(0.05)


async def follow(response: aiohttp.ClientResponse, jobs: set[int]) -> int:
    """Read until every job in ``jobs`` has had its done event; returns events read."""
    reader = SseReader(response, within=300)
    count = 0
    while jobs:
        block = await reader.event()
        count += 1
        if block.event == "done":
            jobs.discard(block.json()["job_id"])
    return count


async def main(streams: int, jobs: int) -> None:
    runner = web.AppRunner(build_image_host_app([]))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    image_url = f"http://127.0.0.1:{port}/img/40x30.png"
    service = ServiceProcess(
        {
            "RP_STORES": str(ROOT / "stores.csv"),
            "RP_DATABASE_URL": "memory",
            "RP_GPU_DELAY_MIN": "0",
            "RP_GPU_DELAY_MAX": "0",
            "RP_LOG_LEVEL": "warning",
            "RP_MAX_EVENT_STREAMS": str(streams + 10),
        }
    )
    try:
        await asyncio.to_thread(service.wait_healthy)
        pid = service.process.pid
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(
            service.base_url, connector=connector, timeout=timeout
        ) as session:
            # Warm up, then the same work without streams, for the CPU baseline.
            await wait_all_done(session, await run_jobs(session, image_url, 5))
            before_cpu = cpu_seconds(pid)
            await wait_all_done(session, await run_jobs(session, image_url, jobs))
            quiet_cpu = cpu_seconds(pid) - before_cpu

            rss_before = rss_kib(pid)
            opened: list[Any] = [await session.get("/api/events") for _ in range(streams)]
            await asyncio.sleep(1)
            rss_open = rss_kib(pid)

            before_cpu = cpu_seconds(pid)
            began = time.monotonic()
            ids = await run_jobs(session, image_url, jobs)
            counts = await asyncio.gather(*(follow(r, set(ids)) for r in opened))
            streamed_cpu = cpu_seconds(pid) - before_cpu
            took = time.monotonic() - began
            for response in opened:
                response.close()
        print(f"streams: {streams}, jobs: {jobs} x 20 images")
        print(f"service RSS: {rss_before} KiB -> {rss_open} KiB with the streams open")
        print(f"  = {(rss_open - rss_before) / streams:.1f} KiB per stream")
        print(f"service CPU for the jobs: {quiet_cpu:.2f} s without streams")
        print(f"service CPU for the jobs: {streamed_cpu:.2f} s with the streams ({took:.1f} s)")
        print(f"events per stream: min {min(counts)}, max {max(counts)}")
    finally:
        await asyncio.to_thread(service.kill)
        await runner.cleanup()


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:3]]
    asyncio.run(main(*(arguments + [1000, 50][len(arguments) :])))
