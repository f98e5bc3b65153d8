"""Waiting for a job without sleeping as synchronisation: poll with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient

__all__ = ["eventually", "wait_for_status"]

T = TypeVar("T")


async def wait_for_status(
    client: TestClient[Any, Any], job_id: int, *, within: float = 30.0, interval: float = 0.02
) -> dict[str, Any]:
    """Poll ``/api/status`` until the job is terminal; return the final body."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get("/api/status", params={"jobid": str(job_id)})
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        if body["status"] != "ongoing":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still ongoing after {within}s")
        await asyncio.sleep(interval)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 30.0, interval: float = 0.02
) -> T:
    """Call ``probe`` until it returns something other than None; return that."""
    deadline = time.monotonic() + within
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)
