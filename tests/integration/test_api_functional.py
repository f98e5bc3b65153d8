"""The HTTP contract: every status code and body, over real loopback sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.jobs import payload, submit, visit
from tests.support.polling import wait_for_status

Client = TestClient[Any, Any]


async def test_assignment_sample_payload_verbatim(client: Client, image_host: ImageHost) -> None:
    # The assignment's sample, with its image URLs pointed at our loopback host.
    sample = {
        "count": 2,
        "visits": [
            {
                "store_id": "S00339218",
                "image_url": [
                    image_host.url("/img/550x368.jpg?gallery=2"),
                    image_host.url("/img/550x404.jpg?gallery=3"),
                ],
                "visit_time": "time of store visit",
            },
            {
                "store_id": "S01408764",
                "image_url": [image_host.url("/img/550x368.jpg?gallery=3")],
                "visit_time": "time of store visit",
            },
        ],
    }
    job_id = await submit(client, body=sample)
    assert await wait_for_status(client, job_id) == {"status": "completed", "job_id": job_id}
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert [row["perimeter"] for row in detail["results"]] == [1836, 1908, 1836]
    assert detail["progress"] == {"total": 3, "done": 3, "failed": 0}


async def test_submit_without_trailing_slash(client: Client, image_host: ImageHost) -> None:
    response = await client.post(
        "/api/submit", json=payload(visit("RP00001", image_host.url("/img/8x8.png")))
    )
    assert response.status == 201
    assert (await response.json()) == {"job_id": 1}


async def test_job_ids_count_up_and_stay_unique_under_concurrent_submits(
    client: Client, image_host: ImageHost
) -> None:
    one = visit("RP00001", image_host.url("/img/8x8.png"))
    ids = await asyncio.gather(*(submit(client, one) for _ in range(25)))
    assert sorted(ids) == list(range(1, 26))


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("array body", [1, 2], "request body must be a JSON object"),
    ("count missing", {"visits": [visit("S1", "http://h/a.jpg")]}, "count"),
    ("count is a string", {"count": "1", "visits": [visit("S1", "http://h/a.jpg")]}, "count"),
    ("count mismatch", {"count": 3, "visits": [visit("S1", "http://h/a.jpg")]}, "count"),
    ("visits missing", {"count": 1}, "visits"),
    ("visits not a list", {"count": 1, "visits": "nope"}, "visits"),
    ("visits empty", {"count": 0, "visits": []}, "visits"),
    ("store_id missing", payload({"image_url": ["http://h/a"], "visit_time": "t"}), "store_id"),
    (
        "store_id a number",
        payload({"store_id": 5, "image_url": ["http://h/a"], "visit_time": "t"}),
        "store_id",
    ),
    ("image_url empty", payload(visit("S1")), "image_url"),
    (
        "image_url a string",
        payload({"store_id": "S1", "image_url": "http://h/a", "visit_time": "t"}),
        "image_url",
    ),
    (
        "url not a string",
        payload({"store_id": "S1", "image_url": [7], "visit_time": "t"}),
        "image_url",
    ),
    ("relative url", payload(visit("S1", "/a.jpg")), "image_url"),
    ("ftp url", payload(visit("S1", "ftp://h/a.jpg")), "image_url"),
    ("url without host", payload(visit("S1", "http:///a.jpg")), "image_url"),
    ("url with a space", payload(visit("S1", "http://h/a b.jpg")), "image_url"),
    ("url with a bad port", payload(visit("S1", "http://h:99999/a.jpg")), "image_url"),
    ("url with an undecodable host", payload(visit("S1", "http://xn--/a.jpg")), "image_url"),
    ("visit_time missing", payload({"store_id": "S1", "image_url": ["http://h/a"]}), "visit_time"),
    ("visit_time empty", payload(visit("S1", "http://h/a.jpg", visit_time="")), "visit_time"),
    ("unknown field", {**payload(visit("S1", "http://h/a.jpg")), "extra": 1}, "extra"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_bad_submit_is_400_naming_the_field(
    client: Client, case: str, body: Any, field: str
) -> None:
    response = await client.post("/api/submit/", json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert field in error, error


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b"\xff\xfe", b"null", b"42", b'"text"'], ids=repr
)
async def test_non_object_body_is_400(client: Client, raw: bytes) -> None:
    response = await client.post(
        "/api/submit/", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["error"]


async def test_bad_submit_creates_no_job(client: Client, image_host: ImageHost) -> None:
    await client.post("/api/submit/", json={"count": 2, "visits": []})
    assert await submit(client, visit("RP00001", image_host.url("/img/8x8.png"))) == 1


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?jobid=",
        "?jobid=abc",
        "?jobid=0",
        "?jobid=-1",
        "?jobid=1.5",
        "?jobid=99",
        "?jobid=%C2%B2",
        "?job=1",
    ],
)
async def test_status_of_invalid_or_unknown_job_is_400_empty(client: Client, query: str) -> None:
    response = await client.get(f"/api/status{query}")
    assert response.status == 400
    assert await response.json() == {}


async def test_unknown_store_fails_without_downloading_its_images(
    client: Client, image_host: ImageHost
) -> None:
    job_id = await submit(
        client,
        visit("S00339218", image_host.url("/img/10x10.jpg?known")),
        visit("NOT-A-STORE", image_host.url("/img/10x10.jpg?unknown")),
    )
    status = await wait_for_status(client, job_id)
    assert status == {
        "status": "failed",
        "job_id": job_id,
        "error": [
            {"store_id": "NOT-A-STORE", "error": "store_id 'NOT-A-STORE' not found in store master"}
        ],
    }
    assert image_host.requests == ["/img/10x10.jpg"]  # only the known store's image
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert detail["results"][0]["perimeter"] == 40  # the good result is kept


async def test_mixed_visits_report_each_failed_store_once_in_order(
    client: Client, image_host: ImageHost
) -> None:
    job_id = await submit(
        client,
        visit("S01408764", image_host.url("/status/404"), image_host.url("/img/5x5.png")),
        visit("RP00001", image_host.url("/img/20x10.gif")),
        visit("S00339218", image_host.url("/html")),
        visit("RP00893", image_host.url("/truncated/400x300.jpg")),
        visit("S01408764", image_host.url("/status/503")),
    )
    status = await wait_for_status(client, job_id)
    assert status["status"] == "failed"
    errors = {entry["store_id"]: entry["error"] for entry in status["error"]}
    assert [entry["store_id"] for entry in status["error"]] == ["S01408764", "S00339218", "RP00893"]
    assert errors["S01408764"].startswith(f"image {image_host.url('/status/404')} failed: HTTP 404")
    assert "and 1 more failed images" in errors["S01408764"]
    assert "not an image" in errors["S00339218"]
    assert "corrupt or truncated image" in errors["RP00893"]

    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert detail["progress"] == {"total": 6, "done": 6, "failed": 4}
    good = [row for row in detail["results"] if row["error"] is None]
    assert [(row["store_id"], row["width"], row["height"], row["perimeter"]) for row in good] == [
        ("S01408764", 5, 5, 20),
        ("RP00001", 20, 10, 60),
    ]
    assert good[0]["store_name"] == "SUN, MOON & STARS KIRANA"


async def test_job_is_ongoing_until_its_images_settle(
    client: Client, image_host: ImageHost
) -> None:
    job_id = await submit(client, visit("RP00001", image_host.url("/slow/1/16x16.png")))
    first = await (await client.get("/api/status", params={"jobid": str(job_id)})).json()
    assert first == {"status": "ongoing", "job_id": job_id}
    assert await wait_for_status(client, job_id) == {"status": "completed", "job_id": job_id}


async def test_small_job_is_not_stuck_behind_a_big_one(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(max_in_flight=4))
    big = await submit(
        client, *(visit("RP00001", image_host.url(f"/slow/0.2/8x8.png?big={n}")) for n in range(60))
    )
    small = await submit(
        client,
        *(visit("RP00893", image_host.url(f"/slow/0.2/8x8.png?small={n}")) for n in range(4)),
    )
    assert (await wait_for_status(client, small))["status"] == "completed"
    # With first-come-first-served slots the small job would wait for all 60 big images.
    big_status = await (await client.get(f"/api/jobs/{big}")).json()
    assert big_status["status"] == "ongoing"
    assert big_status["progress"]["done"] < 40


async def test_simulated_gpu_delay_is_honoured(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(gpu_delay_min=0.6, gpu_delay_max=0.6))
    started = time.monotonic()
    job_id = await submit(client, visit("RP00001", image_host.url("/img/8x8.png")))
    await wait_for_status(client, job_id, interval=0.01)
    # A lower bound cannot flake: the image may not settle before its delay.
    assert time.monotonic() - started >= 0.6


async def test_header_verify_measures_a_truncated_image(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(verify="header"))
    job_id = await submit(client, visit("RP00001", image_host.url("/truncated/300x200.jpg")))
    assert (await wait_for_status(client, job_id))["status"] == "completed"
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert detail["results"][0]["perimeter"] == 1000


async def test_images_over_max_pixels_fail(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(max_pixels=10_000))
    job_id = await submit(client, visit("RP00001", image_host.url("/img/200x100.png")))
    status = await wait_for_status(client, job_id)
    assert "image too large: 200x100" in status["error"][0]["error"]


async def test_redirects_are_followed_up_to_the_limit(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(max_redirects=3))
    job_id = await submit(
        client,
        visit("RP00001", image_host.url("/redirect/3/30x10.png")),
        visit("RP00893", image_host.url("/redirect/4/30x10.png")),
    )
    status = await wait_for_status(client, job_id)
    assert [entry["store_id"] for entry in status["error"]] == ["RP00893"]
    assert "too many redirects" in status["error"][0]["error"]


async def test_job_detail_pages_through_results(client: Client, image_host: ImageHost) -> None:
    urls = [image_host.url(f"/img/{n}x1.png") for n in range(1, 8)]
    job_id = await submit(
        client,
        visit("RP00001", *urls[:4], visit_time="2024-05-01T12:00:00+02:00"),
        visit("S00339218", *urls[4:]),
    )
    await wait_for_status(client, job_id)
    page = await (
        await client.get(f"/api/jobs/{job_id}", params={"offset": "3", "limit": "3"})
    ).json()
    assert (page["offset"], page["limit"]) == (3, 3)
    assert [row["width"] for row in page["results"]] == [4, 5, 6]
    assert page["results"][0]["visit_time"] == "2024-05-01T10:00:00Z"
    assert page["results"][1]["store_name"] == "GREEN VALLEY MART"
    assert page["status"] == "completed"
    assert page["finished_at"] is not None
    past_end = await (await client.get(f"/api/jobs/{job_id}", params={"offset": "50"})).json()
    assert past_end["results"] == []


async def test_job_detail_page_size_is_capped(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(default_page_size=2, max_page_size=3))
    job_id = await submit(
        client, visit("RP00001", *(image_host.url(f"/img/{n}x2.png") for n in range(1, 6)))
    )
    await wait_for_status(client, job_id)
    default = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert len(default["results"]) == 2
    capped = await (await client.get(f"/api/jobs/{job_id}?limit=500")).json()
    assert (capped["limit"], len(capped["results"])) == (3, 3)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/jobs/999", 404),
        ("/api/jobs/abc", 400),
        ("/api/jobs/0", 400),
        ("/api/jobs/1?offset=-1", 400),
        ("/api/jobs/1?limit=0", 400),
        ("/api/jobs/1?limit=ten", 400),
    ],
)
async def test_job_detail_errors(
    client: Client, image_host: ImageHost, path: str, status: int
) -> None:
    await submit(client, visit("RP00001", image_host.url("/img/8x8.png")))
    response = await client.get(path)
    assert response.status == status
    assert (await response.json())["error"]


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_unknown_route_and_method_answer_json(client: Client) -> None:
    missing = await client.get("/api/nope")
    assert missing.status == 404
    assert (await missing.json())["error"]
    wrong_method = await client.get("/api/submit/")
    assert wrong_method.status == 405
    assert (await wrong_method.json())["error"]


HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("integer past Python's digit limit", b'{"count": ' + b"9" * 5000 + b', "visits": []}'),
    ("nesting past the recursion limit", b"[" * 100_000 + b"]" * 100_000),
]


@pytest.mark.parametrize(("case", "raw"), HOSTILE_BODIES, ids=[c[0] for c in HOSTILE_BODIES])
async def test_pathological_json_is_400_not_500(client: Client, case: str, raw: bytes) -> None:
    response = await client.post(
        "/api/submit/", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert "not valid JSON" in (await response.json())["error"]


async def test_job_id_with_thousands_of_digits_is_invalid_not_500(client: Client) -> None:
    digits = "9" * 5000
    status = await client.get("/api/status", params={"jobid": digits})
    assert (status.status, await status.json()) == (400, {})
    detail = await client.get(f"/api/jobs/{digits}")
    assert detail.status == 400


async def test_url_that_the_downloader_cannot_parse_is_a_400(client: Client) -> None:
    response = await client.post(
        "/api/submit/", json=payload(visit("RP00001", "http://xn--/a.jpg"))
    )
    assert response.status == 400
    assert "image_url" in (await response.json())["error"]


async def test_iso_time_out_of_utc_range_is_kept_verbatim(
    client: Client, image_host: ImageHost
) -> None:
    edge = "0001-01-01T00:00:00+01:00"
    job_id = await submit(client, visit("RP00001", image_host.url("/img/4x4.png"), visit_time=edge))
    await wait_for_status(client, job_id)
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert detail["results"][0]["visit_time"] == edge
