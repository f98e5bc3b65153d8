"""Fetching in tests: a stand-in fetcher for scheduling tests, and the retrying loop around
``Downloader.try_fetch`` that the pipeline otherwise runs on timers."""

from __future__ import annotations

import asyncio

from service.net.byte_budget import ByteLease
from service.net.downloader import Downloader, RetryLater

__all__ = ["UrlBytesFetcher", "fetch_retrying"]


class UrlBytesFetcher:
    """Answers at once with the URL's own bytes, so each image's data names it."""

    async def try_fetch(
        self,
        url: str,
        attempt: int = 1,
        *,
        job: int = 0,
        lease: ByteLease | None = None,
    ) -> bytes:
        return url.encode()


async def fetch_retrying(downloader: Downloader, url: str, *, job: int = 0) -> bytes:
    """Download with retries, sleeping out each backoff: the bytes, or ``FetchError``."""
    attempt = 1
    while True:
        try:
            return await downloader.try_fetch(url, attempt, job=job)
        except RetryLater as later:
            await asyncio.sleep(later.delay)
            attempt += 1
