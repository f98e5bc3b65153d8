"""The API the dashboard reads: failed images by index, the public key question, stats."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from service.config import Settings
from service.jobs.model import Visit
from service.jobs.postgres_store import PostgresJobStore
from service.jobs.queries import FAILED_ROWS, numbered
from service.jobs.schema import migrations
from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.flow import SettledImage
from service.replica import Replica
from service.store_master import Store
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import wait_for_status

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
