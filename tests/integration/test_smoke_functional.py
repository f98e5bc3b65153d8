"""The assignment's sample flow end to end against a loopback image host."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.image_host import ImageHost
from tests.support.jobs import submit
from tests.support.polling import wait_for_status


async def test_sample_payload_completes(
    client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    sample = {
        "count": 2,
        "visits": [
            {
                "store_id": "S00339218",
                "image_url": [image_host.url("/img/640x480.jpg"), image_host.url("/img/30x20.png")],
                "visit_time": "time of store visit",
            },
            {
                "store_id": "S01408764",
                "image_url": [image_host.url("/img/12x8.webp")],
                "visit_time": "time of store visit",
            },
        ],
    }
    job_id = await submit(client, body=sample)
    assert job_id == 1
    assert await wait_for_status(client, job_id) == {"status": "completed", "job_id": 1}
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert [row["perimeter"] for row in detail["results"]] == [2240, 100, 40]
