"""Request limits (413 and 400) and admission control (503 with Retry-After)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient

from service.api import keys
from service.config import Settings
from service.jobs.model import Visit, estimated_bytes
from service.outcomes import MAX_ERROR_LENGTH
from tests.support.fault_host import FaultHost
from tests.support.image_host import ImageHost
from tests.support.jobs import job_ids, payload, post_job, submit, visit
from tests.support.polling import wait_for_status


def _padded_body(size: int) -> bytes:
    # A valid submission padded with whitespace: only its size is wrong.
    body = json.dumps(payload(visit("RP00001", "http://127.0.0.1:9/a.jpg"))).encode()
    return body + b" " * (size - len(body))


async def _error(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) <= {"error", "details"}
    message: str = body["error"]
    return message


async def test_body_over_limit_with_content_length_is_413(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(max_body_bytes=1000))
    fits = await client.post(
        "/api/submit/", data=_padded_body(1000), headers={"Content-Type": "application/json"}
    )
    assert fits.status == 201
    response = await client.post(
        "/api/submit/", data=_padded_body(1001), headers={"Content-Type": "application/json"}
    )
    assert await _error(response, 413) == "request body larger than 1000 bytes"


async def test_chunked_body_over_limit_is_413(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(max_body_bytes=1000))

    async def chunks() -> AsyncIterator[bytes]:
        body = _padded_body(5000)
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    response = await client.post(
        "/api/submit/", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert await _error(response, 413) == "request body larger than 1000 bytes"


async def test_too_many_images_per_job_is_400(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(max_images_per_job=3))
    urls = [f"http://127.0.0.1:9/{n}.jpg" for n in range(4)]
    body = payload(visit("RP00001", *urls))
    message = await _error(await client.post("/api/submit/", json=body), 400)
    assert message == "visits: Job has 4 images; at most 3 are allowed."


async def test_url_over_length_limit_is_400(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(max_url_length=40))
    ok_url = "http://127.0.0.1:9/" + "a" * 21  # exactly 40 characters
    long_url = ok_url + "b"
    body = payload(visit("RP00001", ok_url, long_url))
    message = await _error(await client.post("/api/submit/", json=body), 400)
    assert message == "visits[0].image_url[1]: Longer than 40 characters."


async def test_store_id_over_length_limit_is_400(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(max_store_id_length=5))
    response = await client.post(
        "/api/submit/", json=payload(visit("RP00001", "http://127.0.0.1:9/a.jpg"))
    )
    assert await _error(response, 400) == "visits[0].store_id: Longer than 5 characters."


async def test_visit_time_over_length_limit_is_400(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(max_visit_time_length=10))
    url = "http://127.0.0.1:9/a.jpg"
    await submit(client, visit("RP00001", url, visit_time="t" * 10))
    over = payload(visit("RP00001", url, visit_time="t" * 11))
    message = await _error(await client.post("/api/submit/", json=over), 400)
    assert message == "visits[0].visit_time: Longer than 10 characters."


async def test_a_100_kb_visit_time_is_refused_at_the_default_limit(
    client: TestClient[Any, Any],
) -> None:
    # Every result row repeats its visit's time: 1 MB of it made one page of a
    # 1,000-image job 1 GB. The default limit refuses it at the door.
    huge = "2026-01-01T00:00:00Z" + "x" * 100_000
    body = payload(visit("RP00001", "http://127.0.0.1:9/a.jpg", visit_time=huge))
    message = await _error(await client.post("/api/submit/", json=body), 400)
    assert message == "visits[0].visit_time: Longer than 64 characters."
    assert await job_ids(client) == []


async def test_a_page_of_1000_rows_with_every_field_at_its_limit_is_a_few_mb(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    # The most one client can make a page of results cost at the default limits:
    # store_id, visit_time and every URL at their longest. The store is unknown, so
    # its images fail as the job is created, without a download.
    prefix = "http://127.0.0.1:9/"
    filler = settings.max_url_length - len(prefix) - 4
    urls = [f"{prefix}{n:04d}{'u' * filler}" for n in range(settings.max_page_size)]
    longest = visit(
        "s" * settings.max_store_id_length,
        *urls,
        visit_time="t" * settings.max_visit_time_length,
    )
    body = json.dumps(payload(longest)).encode()
    # A file object: aiohttp warns that a 2 MB bytes body would block its loop.
    response = await client.post(
        "/api/submit/", data=io.BytesIO(body), headers={"Content-Type": "application/json"}
    )
    assert response.status == 201, await response.text()
    job_id = (await response.json())["job_id"]
    limit = {"limit": str(settings.max_page_size)}
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/results"):
        page = await (await client.get(path, params=limit)).read()
        rows = json.loads(page)["results"]
        assert len(rows) == settings.max_page_size
        assert {len(row["url"]) for row in rows} == {settings.max_url_length}
        # Plus room for the longest error an image can carry, in place of this short one.
        worst = len(page) + sum(MAX_ERROR_LENGTH - len(row["error"]) for row in rows)
        assert worst < 3_000_000, worst


async def test_an_image_error_quoting_a_remote_host_is_cut_short(
    client: TestClient[Any, Any], fault_host: FaultHost
) -> None:
    # The error quotes the redirect's Location, which the remote host chooses.
    target = "ftp://127.0.0.1/" + "a" * 1500
    url = fault_host.url("/redirect-to?url=" + quote(target, safe=""))
    job_id = await submit(client, visit("RP00001", url))
    await wait_for_status(client, job_id)
    (row,) = (await (await client.get(f"/api/jobs/{job_id}")).json())["results"]
    assert row["error"].startswith("redirect to a non-http(s) URL: ftp://127.0.0.1/aaa")
    assert len(row["error"]) == MAX_ERROR_LENGTH
    assert row["error"].endswith("\u2026")


async def test_submit_over_pending_cap_is_503_with_retry_after(
    # image_host first: it then outlives the service, which drops the slow downloads
    # on teardown instead of the host waiting for them.
    image_host: ImageHost,
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
) -> None:
    client: TestClient[Any, Any] = await make_client(
        make_settings(max_pending_images=3, max_images_per_job=3)
    )
    slow = [image_host.url(f"/slow/30/{n}x4.png") for n in (1, 2)]
    first = await submit(client, visit("RP00001", *slow))
    # 2 pending + 2 new > 3: refused, and the refusal says why.
    refused = await client.post("/api/submit/", json=payload(visit("RP00001", *slow)))
    message = await _error(refused, 503)
    assert message.startswith("service is busy: 2 images pending, this job adds 2")
    assert int(refused.headers["Retry-After"]) > 0
    # 2 pending + 1 new fits exactly.
    await submit(client, visit("RP00001", image_host.url("/img/3x3.png")))
    # Status keeps answering while saturated.
    status = await client.get("/api/status", params={"jobid": str(first)})
    assert await status.json() == {"status": "ongoing", "job_id": first}


async def test_pending_images_are_released_when_jobs_finish(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client: TestClient[Any, Any] = await make_client(
        make_settings(max_pending_images=3, max_images_per_job=3)
    )
    urls = [image_host.url(f"/img/{n}x4.png") for n in (1, 2, 3)]
    for _ in range(3):
        await wait_for_status(client, await submit(client, visit("RP00001", *urls)))
    # Unknown stores' images settle at once and count only while being created.
    await submit(client, visit("NOPE", *urls))
    assert client.app[keys.JOB_MANAGER].pending_images == 0


async def test_full_service_refuses_before_reading_the_body(
    image_host: ImageHost,
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
) -> None:
    client: TestClient[Any, Any] = await make_client(
        make_settings(max_pending_images=2, max_images_per_job=2, max_body_bytes=400)
    )
    slow = [image_host.url(f"/slow/30/{n}x4.png") for n in (1, 2)]
    await submit(client, visit("RP00001", *slow))
    # Neither the size nor the content of the body matters when nothing could fit:
    # a refused submit costs no parsing.
    refused = await client.post(
        "/api/submit/", data=b"x" * 1000, headers={"Content-Type": "application/json"}
    )
    message = await _error(refused, 503)
    assert message == "service is busy: 2 images pending, the limit is 2; retry later"
    assert refused.headers["Retry-After"] == "5"


async def test_concurrent_submits_cannot_overshoot_the_cap(
    image_host: ImageHost,
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
) -> None:
    client: TestClient[Any, Any] = await make_client(
        make_settings(max_pending_images=5, max_images_per_job=2)
    )
    slow = [image_host.url(f"/slow/30/{n}x4.png") for n in (1, 2)]
    body = payload(visit("RP00001", *slow))
    responses = await asyncio.gather(*(client.post("/api/submit/", json=body) for _ in range(6)))
    # The cap is checked inside the job manager, one submit at a time: 2 + 2 fit, 2 more not.
    assert sorted(response.status for response in responses) == [201, 201, 503, 503, 503, 503]
    assert client.app[keys.JOB_MANAGER].pending_images == 4


async def test_a_store_full_of_unfinished_work_answers_503_with_retry_after(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    held = visit("RP00001", image_host.url("/hold/4x4.png"))
    client = await make_client(make_settings(max_database_bytes=2 * estimated_bytes_of(held)))
    for _ in range(2):
        await submit(client, held)
    response = await post_job(client, payload(held), expect=503)
    assert response.headers["Retry-After"]
    assert "job store is full" in (await response.json())["error"]
    assert len(await job_ids(client)) == 2


def estimated_bytes_of(wire_visit: dict[str, Any]) -> int:
    return estimated_bytes(
        [Visit(wire_visit["store_id"], wire_visit["visit_time"], tuple(wire_visit["image_url"]))]
    )
