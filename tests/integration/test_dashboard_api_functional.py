"""The API the dashboard reads: failed images by index, the public key question, stats."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from service.api import keys
from service.api.ui import UI_ASSETS, UI_DIRECTORY
from service.app import create_app
from service.config import Settings
from service.jobs.model import Visit
from service.jobs.postgres_store import PostgresJobStore
from service.jobs.queries import FAILED_ROWS, numbered
from service.jobs.schema import migrations
from service.jobs.stats import BUCKET_SECONDS, WINDOW_BUCKETS, SharedStats, ThroughputMeter
from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.flow import SettledImage
from service.replica import Replica
from service.store_master import Store
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import eventually, wait_for_status

GOOD = "/img/2x2.png"
BAD = "/status/404"


async def _mixed_job(client: TestClient[Any, Any], image_host: ImageHost) -> int:
    """A finished job whose images 1, 3, 5, 6 and 8 failed (5 and 6: an unknown store)."""
    url = image_host.url
    job_id = await submit(
        client,
        visit("S00339218", url(GOOD), url(BAD), url(GOOD), url(BAD), url(GOOD)),
        visit("NOPE", "http://n.test/a", "http://n.test/b"),
        visit("RP00001", url(GOOD), url(BAD)),
    )
    await wait_for_status(client, job_id)
    return job_id


async def _pages(
    client: TestClient[Any, Any], job_id: int, query: dict[str, str]
) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = await client.get(f"/api/jobs/{job_id}", params={**query, "offset": str(offset)})
        assert response.status == 200, await response.text()
        page = await response.json()
        pages.append(page)
        if page["next_offset"] is None:
            return pages
        assert page["next_offset"] > offset
        offset = page["next_offset"]


@pytest.mark.parametrize("database_url", ["memory", None], ids=["memory", "sqlite"])
async def test_failed_images_only_page_by_the_next_failed_index(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    database_url: str | None,
) -> None:
    overrides = {"database_url": database_url} if database_url else {}
    client = await make_client(make_settings(**overrides))
    job_id = await _mixed_job(client, image_host)
    pages = await _pages(client, job_id, {"failed": "true", "limit": "2"})
    rows = [row for page in pages for row in page["results"]]
    assert [row["index"] for row in rows] == [1, 3, 5, 6, 8]
    assert all(row["error"] and row["state"] == "failed" for row in rows)
    assert [row["store_id"] for row in rows] == ["S00339218"] * 2 + ["NOPE"] * 2 + ["RP00001"]
    assert rows[0]["url"].endswith(BAD)
    assert rows[0]["store_name"] == "GREEN VALLEY MART"
    # Each page starts at the index of the next failed image: no page is empty.
    assert [page["offset"] for page in pages] == [0, 5, 8]
    assert [page["next_offset"] for page in pages] == [5, 8, None]
    # The summary and the store errors come with the page, as unfiltered.
    assert pages[0]["progress"] == {"total": 9, "done": 9, "failed": 5}
    assert [error["store_id"] for error in pages[0]["error"]] == ["S00339218", "NOPE", "RP00001"]
    # Starting between failures finds the next one.
    middle = await (await client.get(f"/api/jobs/{job_id}?failed=true&offset=4&limit=1")).json()
    assert [row["index"] for row in middle["results"]] == [5]
    assert middle["next_offset"] == 6
    # Unfiltered pages say where the next page starts too, and every row its index.
    plain = await _pages(client, job_id, {"limit": "4"})
    assert [page["next_offset"] for page in plain] == [4, 8, None]
    assert [row["index"] for page in plain for row in page["results"]] == list(range(9))
    off = await (await client.get(f"/api/jobs/{job_id}?failed=false&limit=3")).json()
    assert [row["index"] for row in off["results"]] == [0, 1, 2]
    for bad in ("failed=maybe", "failed="):
        response = await client.get(f"/api/jobs/{job_id}?{bad}")
        assert response.status == 400, bad
        assert "failed" in (await response.json())["error"]
    assert (await client.get("/api/jobs/999?failed=true")).status == 404


def test_failed_images_are_read_through_the_index_on_sqlite(tmp_path: Any) -> None:
    # The schema as migrated, and the query the SQLite store runs: SQLite's own plan.
    connection = sqlite3.connect(tmp_path / "plan.db")
    for migration in migrations("sqlite"):
        connection.executescript(migration.sql)
    plan = " ".join(
        row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {FAILED_ROWS}", (1, 0, 100))
    )
    assert "USING INDEX images_failed" in plan, plan
    connection.close()


SHOP = Store("S1", "Shop", "7")
HTTP_404 = ImageOutcome.failed("HTTP 404", FailureKind.HTTP_STATUS)


@pytest.mark.postgres
async def test_failed_images_on_postgresql(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url).store
    store = PostgresJobStore(postgres_url, settings, Replica())
    await store.open()
    try:
        # 2,000 images, every 250th failed: the index is far cheaper than the table.
        urls = tuple(f"http://h/{n}" for n in range(2000))
        created = await store.create([Visit("S1", "t", urls)], [SHOP], max_pending=10_000)
        settled = []
        while tasks := await store.claim(500):
            settled += [
                SettledImage(
                    task, HTTP_404 if task.index % 250 == 7 else ImageOutcome.measured(2, 3)
                )
                for task in tasks
            ]
        await store.record(settled)
        found = await store.failed_rows(created.job_id, 0, 3)
        assert found is not None
        summary, rows = found
        assert summary.failed == 8
        assert [row.index for row in rows] == [7, 257, 507]
        assert all(row.error == "HTTP 404" and row.url == urls[row.index] for row in rows)
        found = await store.failed_rows(created.job_id, 508, 100)
        assert found is not None
        assert [row.index for row in found[1]] == [757, 1007, 1257, 1507, 1757]
        assert await store.failed_rows(created.job_id + 1, 0, 3) is None
        connection = await asyncpg.connect(postgres_url)
        try:
            await connection.execute("ANALYZE images")
            plan = await connection.fetch(
                f"EXPLAIN {numbered(FAILED_ROWS)}", created.job_id, 0, 100
            )
        finally:
            await connection.close()
        text = "\n".join(row[0] for row in plan)
        assert "images_failed" in text, text
    finally:
        await store.close()


KEY = "dashboard-key"


async def test_auth_says_whether_a_key_is_needed_and_nothing_else(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    open_service = await make_client(make_settings())
    response = await open_service.get("/api/auth", headers={"X-API-Key": "anything"})
    assert (response.status, await response.json()) == (200, {"key_required": False})
    guarded = await make_client(make_settings(api_key=KEY))
    # Open: asked before the page has a key, and never a 401.
    response = await guarded.get("/api/auth")
    assert (response.status, await response.json()) == (200, {"key_required": True})
    for headers, valid in [
        ({"X-API-Key": KEY}, True),
        ({"Authorization": f"Bearer {KEY}"}, True),
        ({"X-API-Key": KEY + "x"}, False),
        ({"X-API-Key": "ключ"}, False),
    ]:
        response = await guarded.get("/api/auth", headers=headers)
        body = await response.json()
        assert (response.status, body) == (200, {"key_required": True, "key_valid": valid})
    # The data it guards still needs the key.
    assert (await guarded.get("/api/stats")).status == 401
    assert (await guarded.get("/api/stats", headers={"X-API-Key": KEY})).status == 200


class FakeClock:
    """Wall-clock seconds that move only when told, for the 5-second buckets."""

    def __init__(self) -> None:
        # The start of a bucket, plus a second: what happens now lands in this bucket.
        self.now = (time.time() // BUCKET_SECONDS) * BUCKET_SECONDS + 1

    def __call__(self) -> float:
        return self.now


async def _service_with_clock(
    aiohttp_client: Any, settings: Settings, clock: FakeClock
) -> TestClient[Any, Any]:
    app = create_app(settings)
    app[keys.THROUGHPUT] = ThroughputMeter(clock)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


async def _stats(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/api/stats")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def _images(stats: dict[str, Any]) -> float:
    return sum(rate * BUCKET_SECONDS for _, rate in stats["images_per_second"])


async def test_stats_of_one_process(
    aiohttp_client: Any, make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    clock = FakeClock()
    client = await _service_with_clock(aiohttp_client, make_settings(), clock)
    url = image_host.url
    job_id = await submit(
        client,
        visit("S00339218", url(GOOD), url(GOOD), url(BAD), url(GOOD), url(BAD)),
        visit("NOPE", "http://n.test/a"),
    )
    await wait_for_status(client, job_id)
    during = await _stats(client)
    # The bucket under way is not on the chart yet (it would show as a dip)...
    assert _images(during) == 0
    # ...but its failures count at once; the unknown store's image was never processed.
    assert during["failures_by_kind"] == {"http_status": 2, "unknown_store": 1}
    clock.now += BUCKET_SECONDS
    stats = await _stats(client)
    points = stats["images_per_second"]
    assert len(points) == WINDOW_BUCKETS
    ends = [end for end, _ in points]
    assert ends == [ends[0] + BUCKET_SECONDS * n for n in range(WINDOW_BUCKETS)]
    assert ends[-1] == clock.now - 1  # the bucket that just ended
    assert points[-1][1] == 1.0  # five images in five seconds
    assert _images(stats) == 5
    assert stats["ready"] is True and "reason" not in stats
    assert (stats["in_flight"], stats["queued"], stats["pending"]) == (0, 0, 0)
    assert stats["replicas"] == 1
    # Five minutes on, the job has left the window.
    clock.now += WINDOW_BUCKETS * BUCKET_SECONDS
    later = await _stats(client)
    assert _images(later) == 0
    assert later["failures_by_kind"] == {}
    # Work in hand: two held images in flight, both pending until they settle.
    held = await submit(client, visit("S00339218", url("/hold/2x2.png"), url("/hold/3x3.png")))
    busy = await eventually(
        lambda: _when(_stats(client), lambda body: body["in_flight"] == 2 or None)
    )
    assert busy["pending"] == 2
    image_host.release()
    await wait_for_status(client, held)


async def _when(pending: Any, check: Callable[[dict[str, Any]], Any]) -> dict[str, Any] | None:
    body: dict[str, Any] = await pending
    return body if check(body) else None


@pytest.mark.postgres
async def test_stats_on_postgresql_sum_the_live_replicas(
    # The database first: set up before the services, so torn down after them.
    postgres_url: str,
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
) -> None:
    clock = FakeClock()
    settings = make_settings(database_url=postgres_url, max_in_flight=2)
    first = await _service_with_clock(aiohttp_client, settings, clock)
    second = await _service_with_clock(aiohttp_client, settings, clock)
    sources = []
    for client in (first, second):
        source = client.app[keys.STATS]
        assert isinstance(source, SharedStats)
        sources.append(source)
    url = image_host.url
    # Held images: each replica claims a batch of four, two in flight, so both take a share.
    job_id = await submit(
        first,
        visit("S00339218", *(url(f"/hold/{n}x2.png") for n in range(2, 12)), url(BAD)),
    )
    pipelines = [client.app[keys.PIPELINE] for client in (first, second)]
    await eventually(lambda: _true(all(pipeline.in_flight == 2 for pipeline in pipelines)))
    for source in sources:
        await source.publish()
    busy = [await _stats(client) for client in (first, second)]
    for stats in busy:
        assert (stats["in_flight"], stats["queued"], stats["pending"]) == (4, 4, 11)
    image_host.release()
    await wait_for_status(first, job_id)
    clock.now += BUCKET_SECONDS
    for source in sources:
        await source.publish()
    answers = [await _stats(client) for client in (first, second)]
    # Whichever replica the balancer picks, the same figures: the sum over both.
    assert answers[0]["images_per_second"] == answers[1]["images_per_second"]
    for stats in answers:
        assert _images(stats) == 11
        assert stats["failures_by_kind"] == {"http_status": 1}
        assert stats["replicas"] == 2
        assert (stats["in_flight"], stats["queued"], stats["pending"]) == (0, 0, 0)
    own = [client.app[keys.THROUGHPUT].snapshot().series[-1] for client in (first, second)]
    assert sum(own) == 11 and all(own), own
    # A replica that stops takes its row with it.
    await second.close()
    alone = await _stats(first)
    assert alone["replicas"] == 1
    assert _images(alone) == own[0]


async def _true(condition: bool) -> bool | None:
    return True if condition else None


@pytest.mark.parametrize("api_key", ["", KEY], ids=["open", "with-key"])
async def test_the_dashboard_loads_without_the_key_under_a_strict_csp(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], api_key: str
) -> None:
    client = await make_client(make_settings(api_key=api_key))
    page = await client.get("/ui/")
    assert page.status == 200
    assert page.content_type == "text/html"
    policy = page.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = await page.text()
    # Everything it loads is the service's own; nothing inline for the CSP to refuse.
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith(("/ui/", "/api/docs", "#")) for source in sources)
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
    assert " style=" not in html and "<style" not in html
    for name, media_type in [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("csv.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        asset = await client.get(f"/ui/{name}")
        assert (asset.status, asset.content_type) == (200, media_type), name
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get(URL("/ui/..%2Fapi%2Fui.py", encoded=True))).status == 404
    assert (await client.get("/ui/nope.js")).status == 404
    moved = await client.get("/ui", allow_redirects=False)
    assert (moved.status, moved.headers["Location"]) == (301, "/ui/")
    # The data behind it still needs the key when one is set.
    assert (await client.get("/api/jobs")).status == (401 if api_key else 200)


def test_the_page_never_turns_text_into_html() -> None:
    # Data reaches the page only as text: no HTML sinks anywhere in its scripts (and the
    # CSP's Trusted Types would make one throw).
    for script in UI_DIRECTORY.glob("*.js"):
        source = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, (script.name, sink)
    assert {path.name for path in UI_DIRECTORY.iterdir()} == {"index.html", *UI_ASSETS}
