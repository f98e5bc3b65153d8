"""Jobs in wire form, and the calls that submit and list them on a running service."""

from __future__ import annotations

from typing import Any, TypeAlias

import aiohttp
from aiohttp.test_utils import TestClient

__all__ = ["VISIT_TIME", "Http", "job_ids", "payload", "post_job", "submit", "visit"]

# pytest-aiohttp's client, or a session opened on the service's base URL
# (``aiohttp.ClientSession(base_url)``) for a service in its own process.
Http: TypeAlias = TestClient[Any, Any] | aiohttp.ClientSession

VISIT_TIME = "2026-11-29T10:00:00Z"


def visit(store_id: str, *urls: str, visit_time: str = VISIT_TIME) -> dict[str, Any]:
    """One store visit as the API takes it."""
    return {"store_id": store_id, "image_url": list(urls), "visit_time": visit_time}


def payload(*visits: dict[str, Any]) -> dict[str, Any]:
    """A submission of ``visits``, its count filled in."""
    return {"count": len(visits), "visits": list(visits)}


async def post_job(http: Http, body: Any, *, expect: int = 201) -> aiohttp.ClientResponse:
    """POST ``body`` as JSON to /api/submit/ and assert the status, quoting the answer.

    The answer is read before the connection is released, so ``.json()`` still works on it.
    """
    async with http.post("/api/submit/", json=body) as response:
        text = await response.text()
    assert response.status == expect, f"{response.status}: {text}"
    return response


async def submit(http: Http, *visits: dict[str, Any], body: Any = None) -> int:
    """Submit ``visits``, or ``body`` exactly as given; assert 201 and return the job id."""
    if body is None:
        body = payload(*visits)
    else:
        assert not visits, "pass visits or a body, not both"
    response = await post_job(http, body)
    job_id = (await response.json())["job_id"]
    assert isinstance(job_id, int), job_id
    return job_id


async def job_ids(http: Http) -> list[int]:
    """The ids on the first page of GET /api/jobs, newest first."""
    async with http.get("/api/jobs") as response:
        text = await response.text()
        assert response.status == 200, f"{response.status}: {text}"
        listed = await response.json()
    return [job["job_id"] for job in listed["jobs"]]
