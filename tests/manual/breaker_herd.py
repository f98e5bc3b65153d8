"""By-hand measurement: thousands of images waiting for one open circuit, then released.

Run: .venv/bin/python -m tests.manual.breaker_herd [images_per_job]
Runs the service in this process against two loopback image hosts. Host X goes
down; two jobs of ``images_per_job`` images each on X open its circuit and park.
Reports the requests X saw while down, the images parked and the RSS they cost.
Then X comes back; once the probe has closed its circuit and the parked images
are back in the queue, a job of 200 images on host Y is submitted. It reports
when each job finished (Y's should not wait for all of X's) and the longest
event-loop stall seen.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from service.api import keys
from service.app import create_app
from service.config import Settings
from service.pipeline.flow import Pipeline
from tests.support.image_host import ImageHost, Outage, build_image_host_app
from tests.support.jobs import submit, visit
from tests.support.polling import eventually

STORES = "AreaCode,StoreName,StoreID\n7100016,GREEN VALLEY MART,S00339218\n"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def host() -> ImageHost:
    requests: list[str] = []
    outage = Outage()
    server = TestServer(build_image_host_app(requests, None, outage))
    await server.start_server()
    return ImageHost(server, requests, None, outage)


async def parked(pipeline: Pipeline, at_least: int) -> int | None:
    return pipeline.circuit_waiting if pipeline.circuit_waiting >= at_least else None


async def released(pipeline: Pipeline) -> bool | None:
    return True if pipeline.circuit_waiting == 0 else None


async def finished(client: TestClient[Any, Any], job: int) -> float:
    while True:
        body = await (await client.get("/api/status", params={"jobid": str(job)})).json()
        if body["status"] != "ongoing":
            return time.monotonic()
        await asyncio.sleep(0.05)


async def main(per_job: int) -> None:
    lag = [0.0]

    async def watch_loop() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lag[0] = max(lag[0], time.monotonic() - before - 0.01)

    watcher = asyncio.create_task(watch_loop())
    x, y = await host(), await host()
    with tempfile.TemporaryDirectory() as tmp:
        stores = Path(tmp) / "stores.csv"
        stores.write_text(STORES)
        settings = Settings(
            stores=str(stores),
            database_url="memory",
            workers=2,
            gpu_delay_min=0.0,
            gpu_delay_max=0.0,
            allow_private_networks=True,
            circuit_breaker_cool_down=2.0,
        )
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        pipeline = client.app[keys.PIPELINE]
        x.go_down()
        base = rss_mib()
        urls = [[x.url(f"/img/16x16.png?j={j}&i={i}") for i in range(per_job)] for j in range(2)]
        started = time.monotonic()
        jobs = [await submit(client, visit("S00339218", *job_urls)) for job_urls in urls]
        await eventually(lambda: parked(pipeline, at_least=2 * per_job - 100), within=120)
        parked_at = time.monotonic()
        print(f"parked {pipeline.circuit_waiting} images in {parked_at - started:.2f}s")
        print(f"X saw {x.outage.refused} requests while down (of {2 * per_job} images)")
        print(f"RSS {base:.0f} -> {rss_mib():.0f} MiB with them parked")
        print(f"longest event-loop stall until then: {lag[0] * 1000:.0f} ms")
        lag[0] = 0.0

        x.come_back()
        # The circuit closes at the next probe; the herd is released once it has.
        await eventually(lambda: released(pipeline), within=120, interval=0.005)
        back = time.monotonic()
        print(f"released {back - parked_at:.2f}s after parking; {pipeline.queued_images} queued")
        other = await submit(
            client, visit("S00339218", *[y.url(f"/img/16x16.png?i={i}") for i in range(200)])
        )
        done = await asyncio.gather(*(finished(client, job) for job in [*jobs, other]))
        print(f"X's jobs done {done[0] - back:.2f}s and {done[1] - back:.2f}s after that")
        print(f"Y's 200-image job, submitted then, done in {done[2] - back:.2f}s")
        print(f"longest event-loop stall since: {lag[0] * 1000:.0f} ms")
        await client.close()
    watcher.cancel()
    for server in (x, y):
        await server.server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
