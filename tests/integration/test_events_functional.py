"""Live events through the real API: a job's stream and the stream of every job."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import eventually, wait_for_status
from tests.support.sse import Block, SseReader

Client = TestClient[Any, Any]

PROGRESS_INTERVAL = 0.25


@pytest.fixture
def start(
    any_store_url: str, make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> Callable[..., Any]:
    async def start(**overrides: Any) -> Client:
        client: Client = await make_client(make_settings(database_url=any_store_url, **overrides))
        return client

    return start


async def settled(client: Client, job_id: int, count: int) -> None:
    async def reached() -> bool | None:
        async with client.get(f"/api/jobs/{job_id}", params={"limit": "1"}) as response:
            progress = (await response.json())["progress"]
        return True if progress["done"] >= count else None

    await eventually(reached)


async def metric(client: Client, name: str) -> float:
    async with client.get("/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, name
    return float(found[1])


def count_of(block: Block) -> int:
    assert block.id is not None
    return int(block.id.rsplit("-", 1)[1])


# -- a job's stream -------------------------------------------------------------


async def test_a_job_s_stream_sends_its_progress_then_done_and_ends(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    urls = ["/img/4x4.png", "/status/404", "/hold/5x5.png", "/hold/6x6.png"]
    job_id = await submit(client, visit("RP00001", *map(image_host.url, urls)))
    await settled(client, job_id, 2)
    async with client.get(f"/api/jobs/{job_id}/events") as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        reader = SseReader(response)
        first = await reader.event()
        # Two settled, one of them failed: the id counts done + failed.
        assert (first.event, first.id) == ("progress", f"{job_id}-0-3")
        assert first.json() == {"job_id": job_id, "done": 2, "failed": 1, "total": 4}
        image_host.release()
        rest = [block for block in await reader.rest() if block.data is not None]
    *progress, done = rest
    assert all(block.event == "progress" for block in progress)
    counts = [count_of(block) for block in [first, *progress]]
    assert counts == sorted(set(counts))
    # The done event is the /api/status body; then the stream ended.
    assert (done.event, done.id) == ("done", f"{job_id}-0-5")
    assert done.json() == {
        "status": "failed",
        "job_id": job_id,
        "error": [
            {
                "store_id": "RP00001",
                "error": f"image {image_host.url('/status/404')} failed: HTTP 404",
            }
        ],
    }


async def test_progress_is_sent_at_most_every_250_ms(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(max_in_flight=64))
    # Forty images settling one by one over about 1.2 s.
    urls = [image_host.url(f"/slow/{0.03 * n:.2f}/{4 + n}x4.png") for n in range(1, 41)]
    began = time.monotonic()
    job_id = await submit(client, visit("RP00001", *urls))
    async with client.get(f"/api/jobs/{job_id}/events") as response:
        events = [block for block in await SseReader(response).rest() if block.data]
    lasted = time.monotonic() - began
    *progress, done = events
    assert done.json() == {"status": "completed", "job_id": job_id}
    assert done.id == f"{job_id}-0-40"
    # The job was seen moving, but never more often than once per interval: everything
    # sent lies between ``began`` and the done event's arrival.
    assert len(progress) >= 2
    assert len(progress) <= lasted / PROGRESS_INTERVAL + 1, (len(progress), lasted)
    counts = [count_of(block) for block in progress]
    assert counts == sorted(set(counts))
    assert [block.json()["done"] for block in progress] == counts


async def test_a_reconnect_with_last_event_id_resumes_and_gets_done_once_finished(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    urls = [image_host.url("/img/3x3.png"), image_host.url("/hold/4x4.png")]
    job_id = await submit(client, visit("RP00001", *urls))
    await settled(client, job_id, 1)
    async with client.get(f"/api/jobs/{job_id}/events") as response:
        last = (await SseReader(response).event()).id
    assert last == f"{job_id}-0-1"
    # The client has this state: the stream sends nothing until the job moves.
    headers = {"Last-Event-ID": last}
    async with client.get(f"/api/jobs/{job_id}/events", headers=headers) as response:
        reader = SseReader(response)
        image_host.release()
        # Not the progress it has: the next change, here the end.
        resumed = await reader.event()
        assert (resumed.event, resumed.id) == ("done", f"{job_id}-0-2")
        assert await reader.rest() == []
    assert (await wait_for_status(client, job_id))["status"] == "completed"
    # The job ended while the client was away: done at once, then the end.
    async with client.get(f"/api/jobs/{job_id}/events", headers=headers) as response:
        blocks = await SseReader(response).rest()
    assert [(block.event, block.id) for block in blocks] == [("done", f"{job_id}-0-2")]
    assert blocks[0].json() == {"status": "completed", "job_id": job_id}


async def test_a_cancelled_job_s_done_event_says_cancelled(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    job_id = await submit(client, visit("RP00001", image_host.url("/hold/4x4.png")))
    async with client.get(f"/api/jobs/{job_id}/events") as response:
        reader = SseReader(response)
        assert (await reader.event()).json() == {
            "job_id": job_id,
            "done": 0,
            "failed": 0,
            "total": 1,
        }
        async with client.post(f"/api/jobs/{job_id}/cancel") as cancelled:
            assert cancelled.status == 202
        done = await reader.event()
        assert (done.event, done.id) == ("done", f"{job_id}-0-0")
        assert done.json() == {"status": "cancelled", "job_id": job_id}
        assert await reader.rest() == []


async def test_an_unknown_job_s_stream_is_a_404_a_bad_id_a_400_and_head_a_405(
    client: Client,
) -> None:
    async with client.get("/api/jobs/999/events") as response:
        assert response.status == 404
        assert await response.json() == {"error": "job 999 not found"}
    async with client.get("/api/jobs/abc/events") as response:
        assert response.status == 400
        assert await response.json() == {"error": "job id must be a positive integer"}
    # A HEAD could only hold a stream open that sends nothing.
    for path in ("/api/events", "/api/jobs/1/events"):
        async with client.head(path) as response:
            assert response.status == 405


# -- every job's stream -----------------------------------------------------------


async def test_the_stream_of_every_job_names_each_job(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    finished = await submit(client, visit("RP00001", image_host.url("/img/2x2.png")))
    await wait_for_status(client, finished)
    first = await submit(client, visit("RP00001", image_host.url("/hold/4x4.png")))
    second = await submit(
        client, visit("RP00001", image_host.url("/hold/5x5.png"), image_host.url("/hold/6x6.png"))
    )
    async with client.get("/api/events") as response:
        assert response.content_type == "text/event-stream"
        reader = SseReader(response)
        # The ongoing jobs first, newest first; a finished job is not among them.
        snapshot = [await reader.event(), await reader.event()]
        assert [(block.event, block.id) for block in snapshot] == [
            ("progress", f"{second}-0-0"),
            ("progress", f"{first}-0-0"),
        ]
        assert snapshot[0].json() == {"job_id": second, "done": 0, "failed": 0, "total": 2}
        # A job submitted now shows up too.
        third = await submit(client, visit("RP00001", image_host.url("/img/3x3.png")))
        image_host.release()
        ended: dict[int, Block] = {}
        while len(ended) < 3:
            block = await reader.event()
            job_id = block.json()["job_id"]
            assert block.id is not None and block.id.startswith(f"{job_id}-")
            assert job_id != finished
            if block.event == "done":
                ended[job_id] = block
    assert {job: block.json()["status"] for job, block in ended.items()} == {
        first: "completed",
        second: "completed",
        third: "completed",
    }
    assert ended[second].id == f"{second}-0-2"


# -- limits ---------------------------------------------------------------------


async def test_streams_past_max_event_streams_are_refused_with_503(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(max_event_streams=2))
    job_id = await submit(client, visit("RP00001", image_host.url("/hold/4x4.png")))
    first = await client.get("/api/events")
    second = await client.get(f"/api/jobs/{job_id}/events")
    assert (first.status, second.status) == (200, 200)
    async with client.get("/api/events") as refused:
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "1"
        assert await refused.json() == {
            "error": "too many event streams open (max_event_streams is 2); retry later"
        }
    async with client.get(f"/api/jobs/{job_id}/events") as refused:
        assert refused.status == 503
    assert await metric(client, "retail_pulse_event_streams_refused_total") == 2
    assert await metric(client, "retail_pulse_event_streams_open") == 2
    # A stream that closes frees its place.
    first.close()

    async def admitted() -> bool | None:
        async with client.get("/api/events") as response:
            return True if response.status == 200 else None

    await eventually(admitted)
    second.close()


async def test_an_idle_stream_carries_heartbeat_comments(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(sse_heartbeat=0.05))
    async with client.get("/api/events") as response:
        reader = SseReader(response)
        beats = [await reader.block(), await reader.block(), await reader.block()]
    assert [block.comments if block else None for block in beats] == [["heartbeat"]] * 3


async def test_the_streams_need_the_api_key_when_one_is_set(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(api_key="s3cret-key"))
    async with client.get("/api/events") as response:
        assert response.status == 401
    async with client.get("/api/jobs/1/events") as response:
        assert response.status == 401
    async with client.get("/api/events", headers={"X-API-Key": "s3cret-key"}) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"


async def test_test_server_teardown_ends_open_streams(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings())
    response = await client.get("/api/events")
    reader = SseReader(response)
    closing = asyncio.create_task(client.server.close())
    blocks = await reader.rest()
    await closing
    assert blocks[-1].retry == 1000
    assert blocks[-1].comments == ["shutdown"]


async def test_a_retried_job_moves_again_under_a_new_epoch(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    async with client.get("/api/events") as response:
        reader = SseReader(response)
        job_id = await submit(client, visit("RP00001", image_host.url("/status/404")))
        first = await reader.event()
        while first.event != "done":
            first = await reader.event()
        assert (first.id, first.json()["status"]) == (f"{job_id}-0-2", "failed")
        async with client.post(f"/api/jobs/{job_id}/retry") as retried:
            assert retried.status == 202
        again = await reader.event()
        while again.event != "done":
            assert again.id is not None and again.id.startswith(f"{job_id}-1-")
            again = await reader.event()
    # The run's own done event: the same failure, in run 1.
    assert (again.id, again.json()["status"]) == (f"{job_id}-1-2", "failed")
