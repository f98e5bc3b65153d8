"""By-hand measurement: RSS of the service's process tree while it handles hostile images.

Run: .venv/bin/python -m tests.manual.hostile_memory [rounds]
Starts ``python -m service`` (default limits, private networks allowed for the
loopback hosts), a fault host and an image host in this process, submits
``rounds`` jobs one after another, each with a never-answering host, a 1 GB
body, a 30000x30000 PNG bomb, a truncated JPEG, an HTML page, a reset
mid-body and one good image, and samples the RSS of the service and all its
descendants (forkserver, pool workers) from /proc.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support.fault_host import FaultHost
from tests.support.image_host import build_image_host_app
from tests.support.jobs import payload, visit

ROOT = Path(__file__).resolve().parents[2]


def tree_rss_bytes(root: int) -> int:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        pending += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def main(rounds: int) -> None:
    fault = await FaultHost().start()
    runner = web.AppRunner(build_image_host_app([]))
    await runner.setup()
    image_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", image_port).start()
    port = free_port()
    env = dict(
        os.environ,
        RP_PORT=str(port),
        RP_HOST="127.0.0.1",
        RP_ALLOW_PRIVATE_NETWORKS="true",
        RP_GPU_DELAY_MIN="0",
        RP_GPU_DELAY_MAX="0",
        RP_READ_TIMEOUT="2",
        RP_LOG_LEVEL="warning",
    )
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "--stores", str(ROOT / "stores.csv"), env=env, cwd=ROOT
    )
    base = f"http://127.0.0.1:{port}"
    image = f"http://127.0.0.1:{image_port}"
    urls = [
        fault.url("/never"),
        fault.url("/stream/close/1000000000"),
        fault.url("/bomb"),
        f"{image}/truncated/1200x900.jpg",
        f"{image}/html",
        fault.url("/reset"),
        f"{image}/img/640x480.jpg",
    ]
    try:
        async with aiohttp.ClientSession() as client:
            for _ in range(200):
                try:
                    async with client.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

            async def run_job(job_urls: list[str]) -> dict[str, object]:
                body = payload(visit("S00339218", *job_urls))
                async with client.post(f"{base}/api/submit/", json=body) as response:
                    job_id = (await response.json())["job_id"]
                while True:
                    async with client.get(f"{base}/api/jobs/{job_id}") as response:
                        body: dict[str, object] = await response.json()
                    if body["status"] != "ongoing":
                        return body
                    await asyncio.sleep(0.1)

            await run_job([f"{image}/img/640x480.jpg"])  # warm up
            baseline = peak = tree_rss_bytes(service.pid)
            started = time.monotonic()
            for number in range(rounds):
                task = asyncio.ensure_future(run_job(urls))
                while not task.done():
                    peak = max(peak, tree_rss_bytes(service.pid))
                    await asyncio.sleep(0.05)
                body = task.result()
                if number == 0:
                    for row in body["results"]:  # type: ignore[attr-defined]
                        print(f"  {row['url'].rsplit('/', 2)[-2:]}: {row['error']}")
            final = tree_rss_bytes(service.pid)
            async with client.get(f"{base}/healthz") as response:
                healthy = response.status == 200
        mib = 1024 * 1024
        print(
            f"rounds={rounds} elapsed={time.monotonic() - started:.1f}s healthy={healthy} "
            f"baseline={baseline / mib:.1f}MiB peak={peak / mib:.1f}MiB "
            f"final={final / mib:.1f}MiB peak_growth={(peak - baseline) / mib:.1f}MiB "
            f"final_growth={(final - baseline) / mib:.1f}MiB"
        )
    finally:
        service.terminate()
        await asyncio.wait_for(service.wait(), 30)
        await fault.close()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
