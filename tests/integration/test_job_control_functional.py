"""Job control through the real API on every store: cancel, retry, idempotent submits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.images import make_image
from tests.support.jobs import job_ids, payload, post_job, submit, visit
from tests.support.polling import eventually, wait_for_status

Client = TestClient[Any, Any]


@pytest.fixture
def start(
    any_store_url: str, make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> Callable[..., Any]:
    # any_store_url first: set up before the client, so torn down after it.
    async def start(**overrides: Any) -> Client:
        client: Client = await make_client(make_settings(database_url=any_store_url, **overrides))
        return client

    return start


class SwitchableHost:
    """Images that answer 503 until ``healthy`` is set."""

    def __init__(self) -> None:
        self.healthy = False
        self.requests = 0

    def app(self) -> web.Application:
        async def image(request: web.Request) -> web.Response:
            self.requests += 1
            if not self.healthy:
                return web.Response(status=503)
            return web.Response(body=make_image(7, 5, "png"), content_type="image/png")

        app = web.Application()
        app.router.add_get("/flaky/{name}", image)
        return app


async def status_of(client: Client, job_id: int) -> dict[str, Any]:
    async with client.get("/api/status", params={"jobid": str(job_id)}) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def detail(client: Client, job_id: int) -> dict[str, Any]:
    async with client.get(f"/api/jobs/{job_id}", params={"limit": "1000"}) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


# -- cancel ---------------------------------------------------------------------


async def test_cancel_mid_job_stops_new_downloads_and_frees_the_budget(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start(max_in_flight=2, max_images_per_job=10, max_pending_images=10)
    urls = [image_host.url(f"/hold/{8 + n}x6.png") for n in range(10)]
    job_id = await submit(client, visit("RP00001", *urls))

    async def two_in_flight() -> bool | None:
        return True if len(image_host.requests) == 2 else None

    await eventually(two_in_flight)
    async with client.post(f"/api/jobs/{job_id}/cancel") as response:
        assert response.status == 202
        assert await response.json() == {"status": "cancelled", "job_id": job_id}
    # The budget is free at once: a job as big as the limit is admitted.
    other = await submit(client, visit("RP00001", *[image_host.url("/img/3x3.png")] * 10))
    image_host.release()
    assert (await wait_for_status(client, other))["status"] == "completed"

    async def in_flight_recorded() -> dict[str, Any] | None:
        body = await detail(client, job_id)
        return body if body["progress"]["done"] == 2 else None

    body = await eventually(in_flight_recorded)
    assert body["status"] == "cancelled"
    states = [row["state"] for row in body["results"]]
    assert states == ["measured"] * 2 + ["cancelled"] * 8
    assert [row["perimeter"] for row in body["results"][:2]] == [28, 30]
    # No download of the cancelled job started after the cancel.
    held = [path for path in image_host.requests if path.startswith("/hold/")]
    assert len(held) == 2
    assert (await status_of(client, job_id))["status"] == "cancelled"


async def test_cancel_answers_409_404_and_400(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    job_id = await submit(client, visit("RP00001", image_host.url("/img/4x4.png")))
    await wait_for_status(client, job_id)
    async with client.post(f"/api/jobs/{job_id}/cancel") as response:
        assert response.status == 409
        assert await response.json() == {"error": "job already completed"}
    async with client.post("/api/jobs/99999/cancel") as response:
        assert response.status == 404
    async with client.post("/api/jobs/nope/cancel") as response:
        assert response.status == 400


async def test_a_cancelled_job_keeps_the_stores_that_had_failed(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start(max_in_flight=1)
    job_id = await submit(
        client,
        visit("GHOST", image_host.url("/img/4x4.png")),
        visit("RP00001", image_host.url("/hold/5x5.png")),
    )
    async with client.post(f"/api/jobs/{job_id}/cancel") as response:
        body = await response.json()
    assert body["status"] == "cancelled"
    assert body["error"] == [
        {"store_id": "GHOST", "error": "store_id 'GHOST' not found in store master"}
    ]
    image_host.release()


# -- retry ----------------------------------------------------------------------


async def test_retry_after_a_host_that_failed_and_now_serves(
    start: Callable[..., Any], aiohttp_server: Any
) -> None:
    host = SwitchableHost()
    server = await aiohttp_server(host.app())
    client = await start(retry_attempts=1)
    urls = [str(server.make_url(f"/flaky/{n}")) for n in range(3)]
    job_id = await submit(client, visit("RP00001", *urls), visit("GHOST", urls[0]))
    first = await wait_for_status(client, job_id)
    assert first["status"] == "failed"
    assert [error["store_id"] for error in first["error"]] == ["RP00001", "GHOST"]

    host.healthy = True
    async with client.post(f"/api/jobs/{job_id}/retry") as response:
        assert response.status == 202, await response.text()
        # The unknown store's image is not retried: it cannot change.
        assert await response.json() == {"job_id": job_id, "queued": 3}
    again = await wait_for_status(client, job_id)
    assert again["status"] == "failed"  # the unknown store still fails the job...
    assert again["error"] == [  # ...but the host's stores are out of the list
        {"store_id": "GHOST", "error": "store_id 'GHOST' not found in store master"}
    ]
    body = await detail(client, job_id)
    assert [row["perimeter"] for row in body["results"][:3]] == [24, 24, 24]
    assert body["progress"] == {"total": 4, "done": 4, "failed": 1}
    assert body["finished_at"] is not None

    async with client.post(f"/api/jobs/{job_id}/retry") as response:
        assert response.status == 409
        assert await response.json() == {"error": "nothing to retry"}


async def test_retry_of_a_job_that_did_not_fail_is_409(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    done = await submit(client, visit("RP00001", image_host.url("/img/4x4.png")))
    await wait_for_status(client, done)
    running = await submit(client, visit("RP00001", image_host.url("/hold/4x4.png")))
    for job_id, status in ((done, "completed"), (running, "ongoing")):
        async with client.post(f"/api/jobs/{job_id}/retry") as response:
            assert response.status == 409
            assert status in (await response.json())["error"]
    image_host.release()


async def test_retry_passes_admission_control(
    start: Callable[..., Any], aiohttp_server: Any, image_host: ImageHost
) -> None:
    host = SwitchableHost()
    server = await aiohttp_server(host.app())
    client = await start(retry_attempts=1, max_images_per_job=2, max_pending_images=2)
    failed = await submit(client, visit("RP00001", str(server.make_url("/flaky/a"))))
    await wait_for_status(client, failed)
    await submit(client, visit("RP00001", *[image_host.url("/hold/3x3.png")] * 2))
    async with client.post(f"/api/jobs/{failed}/retry") as response:
        assert response.status == 503
        assert response.headers["Retry-After"]
    image_host.release()


# -- idempotent submits ---------------------------------------------------------


async def test_the_same_key_and_body_creates_one_job(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    body = payload(visit("RP00001", image_host.url("/img/4x4.png")))
    headers = {"Idempotency-Key": "order-17"}
    async with client.post("/api/submit", json=body, headers=headers) as response:
        assert response.status == 201
        first = (await response.json())["job_id"]
        assert "Idempotent-Replayed" not in response.headers
    # The same JSON once parsed, in other bytes: keys reordered, spaces.
    same = '{ "visits": ' + str(body["visits"]).replace("'", '"') + ', "count": 1 }'
    async with client.post(
        "/api/submit",
        data=same,
        headers={**headers, "Content-Type": "application/json"},
    ) as response:
        assert response.status == 201
        assert (await response.json())["job_id"] == first
        assert response.headers["Idempotent-Replayed"] == "true"
    assert await job_ids(client) == [first]


async def test_the_same_key_with_another_body_is_422(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    headers = {"Idempotency-Key": "k1"}
    one = payload(visit("RP00001", image_host.url("/img/4x4.png")))
    two = payload(visit("RP00001", image_host.url("/img/5x5.png")))
    async with client.post("/api/submit", json=one, headers=headers) as response:
        assert response.status == 201
    async with client.post("/api/submit", json=two, headers=headers) as response:
        assert response.status == 422
        assert "different request body" in (await response.json())["error"]
    assert len(await job_ids(client)) == 1


async def test_concurrent_submits_with_one_key_create_one_job(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    body = payload(visit("RP00001", image_host.url("/img/4x4.png")))

    async def post() -> tuple[int, int]:
        async with client.post(
            "/api/submit", json=body, headers={"Idempotency-Key": "same"}
        ) as response:
            return response.status, (await response.json())["job_id"]

    answers = await asyncio.gather(*(post() for _ in range(8)))
    assert {status for status, _ in answers} == {201}
    assert len({job_id for _, job_id in answers}) == 1
    assert len(await job_ids(client)) == 1


async def test_a_refused_submit_leaves_its_key_free(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start()
    headers = {"Idempotency-Key": "fix-and-retry"}
    bad = {"count": 2, "visits": [visit("RP00001", image_host.url("/img/4x4.png"))]}
    async with client.post("/api/submit", json=bad, headers=headers) as response:
        assert response.status == 400
    good = payload(visit("RP00001", image_host.url("/img/4x4.png")))
    async with client.post("/api/submit", json=good, headers=headers) as response:
        assert response.status == 201
        assert "Idempotent-Replayed" not in response.headers


async def test_a_replay_is_answered_when_the_service_is_full(
    start: Callable[..., Any], image_host: ImageHost
) -> None:
    client = await start(max_images_per_job=1, max_pending_images=1)
    body = payload(visit("RP00001", image_host.url("/hold/4x4.png")))
    headers = {"Idempotency-Key": "full"}
    async with client.post("/api/submit", json=body, headers=headers) as response:
        first = (await response.json())["job_id"]
    await post_job(client, payload(visit("RP00001", image_host.url("/img/3x3.png"))), expect=503)
    async with client.post("/api/submit", json=body, headers=headers) as response:
        assert response.status == 201
        assert (await response.json())["job_id"] == first
    image_host.release()


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there", "é"])
async def test_a_malformed_key_is_400(start: Callable[..., Any], key: str) -> None:
    client = await start()
    body = payload(visit("RP00001", "http://127.0.0.1:9/a.jpg"))
    async with client.post("/api/submit", json=body, headers={"Idempotency-Key": key}) as response:
        assert response.status == 400
        assert "Idempotency-Key" in (await response.json())["error"]
