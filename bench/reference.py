"""The bare reference pipeline: aiohttp at 256 connections feeding Pillow in a process pool.

No service, no job state, no fairness: just download and measure the same URLs
as fast as this machine allows, so service figures can be given as a ratio.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from io import BytesIO

import aiohttp
from PIL import Image

from bench.procs import cpu_seconds

__all__ = ["measure_batch", "run_reference"]

CONNECTIONS = 256
BATCH = 64


def measure_batch(images: list[bytes], verify: str) -> int:
    """Measure a batch in a pool worker; returns how many images measured."""
    measured = 0
    for data in images:
        with Image.open(BytesIO(data)) as image:
            width, height = image.size
            if verify == "full":
                image.load()
        measured += width > 0 and height > 0
    return measured


def _ping(_: int) -> bool:
    return True


async def _run(urls: Sequence[str], verify: str, pool: ProcessPoolExecutor, workers: int) -> int:
    loop = asyncio.get_running_loop()
    # Bound memory like a real pipeline would: a few batches per worker in flight.
    slots = asyncio.Semaphore(workers * 2)
    calls: list[asyncio.Future[int]] = []
    batch: list[bytes] = []
    todo = iter(urls)

    def send(images: list[bytes]) -> None:
        call = loop.run_in_executor(pool, measure_batch, images, verify)
        call.add_done_callback(lambda _: slots.release())
        calls.append(call)

    async def downloader(session: aiohttp.ClientSession) -> None:
        nonlocal batch
        for url in todo:
            async with session.get(url) as response:
                response.raise_for_status()
                data = await response.read()
            batch.append(data)
            if len(batch) >= BATCH:
                full, batch = batch, []
                await slots.acquire()
                send(full)

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(downloader(session) for _ in range(CONNECTIONS)))
    if batch:
        await slots.acquire()
        send(batch)
    return sum(await asyncio.gather(*calls))


def run_reference(urls: Sequence[str], verify: str, workers: int | None = None) -> dict[str, float]:
    """Time the reference on ``urls``; the pool is started and warmed outside the timing."""
    workers = workers or len(os.sched_getaffinity(0))
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        list(pool.map(_ping, range(workers * 4)))
        # Private, but only read: the pids whose CPU time the reference spends.
        worker_pids = list(pool._processes)
        main_before = time.process_time()
        workers_before = sum(cpu_seconds(pid) for pid in worker_pids)
        started = time.perf_counter()
        measured = asyncio.run(_run(urls, verify, pool, workers))
        wall = time.perf_counter() - started
        main_cpu = time.process_time() - main_before
        workers_cpu = sum(cpu_seconds(pid) for pid in worker_pids) - workers_before
    if measured != len(urls):
        raise RuntimeError(f"reference measured {measured} of {len(urls)} images")
    return {
        "images": len(urls),
        "wall_s": round(wall, 3),
        "images_per_s": round(len(urls) / wall, 1),
        "main_cpu_ms_per_image": round(1000 * main_cpu / len(urls), 3),
        "total_cpu_ms_per_image": round(1000 * (main_cpu + workers_cpu) / len(urls), 3),
    }
