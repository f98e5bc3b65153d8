"""Fetching in tests: a stand-in fetcher for scheduling tests, and the retrying loop around
``Downloader.try_fetch`` that the pipeline otherwise runs on timers."""

from __future__ import annotations

import asyncio
import functools

from service.net.byte_budget import ByteLease
from service.net.downloader import CircuitWait, Downloader, RetryLater

__all__ = ["UrlBytesFetcher", "fetch_retrying"]


class UrlBytesFetcher:
    """Answers at once with the URL's own bytes, so each image's data names it."""

    async def try_fetch(
        self,
        url: str,
        attempt: int = 1,
        *,
        job: int = 0,
        wait_until: float | None = None,
        lease: ByteLease | None = None,
    ) -> bytes:
        return url.encode()


async def fetch_retrying(downloader: Downloader, url: str, *, job: int = 0) -> bytes:
    """Download with retries, sleeping out each backoff and waiting out an open circuit
    as the pipeline would: the bytes, or ``FetchError``."""
    attempt = 1
    wait_until: float | None = None
    while True:
        try:
            return await downloader.try_fetch(url, attempt, job=job, wait_until=wait_until)
        except RetryLater as later:
            await asyncio.sleep(later.delay)
            attempt += 1
        except CircuitWait as wait:
            woken = asyncio.get_running_loop().create_future()
            wait.park(functools.partial(_woken, woken))
            await woken
            wait_until = wait.until


def _woken(future: asyncio.Future[None]) -> bool:
    future.set_result(None)
    return True
