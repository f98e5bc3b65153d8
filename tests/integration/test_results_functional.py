"""Results export (streamed CSV, JSON pages) and the recent-jobs list."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.api import keys
from service.api.results import CSV_COLUMNS, FORMULA_PREFIXES
from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.jobs import payload, submit, visit
from tests.support.polling import wait_for_status


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


async def test_csv_export_has_every_row_quoted_correctly(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    # Three rows per chunk, so seven rows take three actor requests and a partial last chunk.
    client = await make_client(make_settings(export_chunk_rows=3))
    good = [image_host.url(f"/img/{n}x2.png?q={n}") for n in range(1, 6)]
    job_id = await submit(
        client,
        # "SUN, MOON & STARS KIRANA": a name with a comma needs quoting.
        visit("S01408764", *good, visit_time="2026-01-02T03:04:05Z"),
        visit("RP00893", image_host.url("/status/404"), visit_time='said "hi", left'),
        visit("GONE", "http://gone.test/a.jpg", visit_time="t"),
    )
    await wait_for_status(client, job_id)
    response = await client.get(f"/api/jobs/{job_id}/results", params={"format": "csv"})
    assert response.status == 200
    assert response.content_type == "text/csv"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="job-{job_id}-results.csv"'
    )
    # Streamed: no length known up front.
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.headers
    rows = parse_csv(await response.text())
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[0] == [
        "store_id",
        "store_name",
        "area_code",
        "visit_time",
        "url",
        "width",
        "height",
        "perimeter",
        "error",
    ]
    assert len(rows) == 1 + 7
    assert rows[1] == [
        "S01408764",
        "SUN, MOON & STARS KIRANA",
        "7100017",
        "2026-01-02T03:04:05Z",
        good[0],
        "1",
        "2",
        "6",
        "",
    ]
    assert [row[5] for row in rows[1:6]] == ["1", "2", "3", "4", "5"]
    assert rows[6] == [
        "RP00893",
        "A.A ENTP,",
        "7000129",
        'said "hi", left',
        image_host.url("/status/404"),
        "",
        "",
        "",
        "HTTP 404",
    ]
    assert rows[7] == [
        "GONE",
        "",
        "",
        "t",
        "http://gone.test/a.jpg",
        "",
        "",
        "",
        "store not found in store master",
    ]


# A store master as a careless or hostile editor might leave it: names and an
# area code that a spreadsheet would run as formulas.
HOSTILE_STORES = [
    ("AreaCode", "StoreName", "StoreID"),
    ("7100021", '=HYPERLINK("http://evil.test","open")', "EQ1"),
    ("7100022", "+1+2", "PLUS1"),
    ("-7100023", "-3+4", "MINUS1"),
    ("7100024", "@SUM(A1:A9)", "AT1"),
    ("7100025", "O'NEIL & SONS, a=b", "SAFE1"),
]


def write_store_master(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


async def test_csv_export_quotes_cells_a_spreadsheet_would_run_as_formulas(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    tmp_path: Path,
) -> None:
    stores = write_store_master(tmp_path / "hostile-stores.csv", HOSTILE_STORES)
    # Two rows per chunk, so the escaping runs across chunk boundaries too.
    client = await make_client(make_settings(stores=str(stores), export_chunk_rows=2))
    urls = [image_host.url(f"/img/{n}x{n + 1}.png") for n in range(1, 6)]
    # Visit times that are not ISO 8601 are kept verbatim, tab and CR included;
    # an unknown store id comes back as sent.
    visits = [
        visit("EQ1", urls[0], visit_time="2026-01-02T03:04:05Z"),
        visit("PLUS1", urls[1], visit_time="\tTAB"),
        visit("MINUS1", urls[2], visit_time="\rCR"),
        visit("AT1", urls[3], visit_time="=NOW()"),
        visit("SAFE1", urls[4], visit_time="visit 1-2 @noon"),
        visit("=cmd|' /C calc'!A0", "http://gone.test/a.jpg", visit_time="-1"),
    ]
    job_id = await submit(client, *visits)
    await wait_for_status(client, job_id)
    response = await client.get(f"/api/jobs/{job_id}/results", params={"format": "csv"})
    assert response.status == 200
    rows = parse_csv(await response.text())
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1:] == [
        [
            "EQ1",
            """'=HYPERLINK("http://evil.test","open")""",
            "7100021",
            "2026-01-02T03:04:05Z",
            urls[0],
            "1",
            "2",
            "6",
            "",
        ],
        ["PLUS1", "'+1+2", "7100022", "'\tTAB", urls[1], "2", "3", "10", ""],
        ["MINUS1", "'-3+4", "'-7100023", "'\rCR", urls[2], "3", "4", "14", ""],
        ["AT1", "'@SUM(A1:A9)", "7100024", "'=NOW()", urls[3], "4", "5", "18", ""],
        ["SAFE1", "O'NEIL & SONS, a=b", "7100025", "visit 1-2 @noon", urls[4], "5", "6", "22", ""],
        [
            "'=cmd|' /C calc'!A0",
            "",
            "",
            "'-1",
            "http://gone.test/a.jpg",
            "",
            "",
            "",
            "store not found in store master",
        ],
    ]
    assert not [cell for row in rows for cell in row if cell[:1] in FORMULA_PREFIXES]
    # Only the CSV is escaped: JSON pages carry the values as stored.
    page = await (await client.get(f"/api/jobs/{job_id}/results")).json()
    results = page["results"]
    assert [r["store_name"] for r in results] == [
        '=HYPERLINK("http://evil.test","open")',
        "+1+2",
        "-3+4",
        "@SUM(A1:A9)",
        "O'NEIL & SONS, a=b",
        None,
    ]
    assert [r["visit_time"] for r in results] == [v["visit_time"] for v in visits]
    assert results[2]["area_code"] == "-7100023"
    assert results[5]["store_id"] == "=cmd|' /C calc'!A0"


async def test_csv_export_of_many_rows_matches_the_json_pages(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # Unknown-store images settle at once, so a big job needs no downloads.
    client = await make_client(make_settings(export_chunk_rows=1000, max_page_size=1000))
    visits = [
        visit(f"X{v}", *(f"http://x.test/{v}/{i}" for i in range(50)), visit_time=f"v{v}")
        for v in range(50)
    ]
    job_id = await submit(client, *visits)
    await wait_for_status(client, job_id)
    text = await (await client.get(f"/api/jobs/{job_id}/results?format=csv")).text()
    rows = parse_csv(text)
    assert len(rows) == 1 + 2500
    assert [row[4] for row in rows[1:]] == [
        f"http://x.test/{v}/{i}" for v in range(50) for i in range(50)
    ]
    page = await (await client.get(f"/api/jobs/{job_id}/results?offset=1999&limit=1000")).json()
    assert page["total"] == 2500
    assert page["offset"] == 1999
    assert page["limit"] == 1000
    assert len(page["results"]) == 501
    assert page["results"][0]["url"] == rows[2000][4]
    # offset and limit also cut a CSV export.
    window = parse_csv(
        await (await client.get(f"/api/jobs/{job_id}/results?format=csv&offset=10&limit=3")).text()
    )
    assert [row[4] for row in window[1:]] == [rows[i][4] for i in (11, 12, 13)]


async def test_json_results_page_defaults_and_caps(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(default_page_size=2, max_page_size=3))
    job_id = await submit(client, visit("Y", *(f"http://y.test/{i}" for i in range(5))))
    await wait_for_status(client, job_id)
    first = await (await client.get(f"/api/jobs/{job_id}/results")).json()
    assert first["job_id"] == job_id
    assert first["status"] == "failed"
    assert (first["offset"], first["limit"], first["total"]) == (0, 2, 5)
    assert [r["url"] for r in first["results"]] == ["http://y.test/0", "http://y.test/1"]
    capped = await (await client.get(f"/api/jobs/{job_id}/results?limit=999")).json()
    assert capped["limit"] == 3
    assert len(capped["results"]) == 3


async def test_results_bad_input_is_a_4xx(client: TestClient[Any, Any]) -> None:
    for path, status in [
        ("/api/jobs/abc/results", 400),
        ("/api/jobs/0/results", 400),
        ("/api/jobs/1/results?format=xml", 400),
        ("/api/jobs/1/results?offset=-1", 400),
        ("/api/jobs/1/results?limit=0", 400),
        ("/api/jobs/1/results?bogus=1", 400),
        ("/api/jobs/1/results", 404),
        ("/api/jobs/1/results?format=csv", 404),
    ]:
        response = await client.get(path)
        assert response.status == status, path
        assert "error" in await response.json()


async def test_an_offset_past_json_safe_integers_is_a_400_not_a_500(
    client: TestClient[Any, Any],
) -> None:
    # Found by schemathesis: the page echoes its offset, and a 21-digit one broke encoding.
    job_id = await submit(client, visit("NOPE", "http://n.test/1"))
    huge = "132184422693816025088"
    for path in (f"/api/jobs/{job_id}/results", f"/api/jobs/{job_id}"):
        response = await client.get(path, params={"offset": huge})
        assert response.status == 400, path
        assert "offset" in (await response.json())["error"]
    largest = str(2**53 - 1)
    response = await client.get(f"/api/jobs/{job_id}/results", params={"offset": largest})
    assert response.status == 200
    assert (await response.json())["offset"] == 2**53 - 1


async def test_job_list_newest_first_with_filter_and_limit(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], image_host: ImageHost
) -> None:
    client = await make_client(make_settings(default_page_size=2, max_page_size=3))
    failed = await submit(client, visit("NOPE", "http://n.test/1"))
    await wait_for_status(client, failed)
    completed = await submit(client, visit("S00339218", image_host.url("/img/2x2.jpg")))
    await wait_for_status(client, completed)
    ongoing = await submit(
        client,
        visit("S00339218", image_host.url("/img/2x2.jpg"), image_host.url("/hold/3x3.jpg")),
    )
    listed = await (await client.get("/api/jobs")).json()
    # Default limit 2: the two newest.
    assert [job["job_id"] for job in listed["jobs"]] == [ongoing, completed]
    newest = listed["jobs"][0]
    assert newest["status"] == "ongoing"
    assert newest["progress"]["total"] == 2
    assert newest["finished_at"] is None
    everything = await (await client.get("/api/jobs?limit=50")).json()
    assert [job["job_id"] for job in everything["jobs"]] == [ongoing, completed, failed]
    only_failed = await (await client.get("/api/jobs?status=failed")).json()
    assert [(j["job_id"], j["status"]) for j in only_failed["jobs"]] == [(failed, "failed")]
    assert only_failed["jobs"][0]["progress"] == {"total": 1, "done": 1, "failed": 1}
    for bad in ("status=done", "limit=0", "limit=x", "page=2"):
        assert (await client.get(f"/api/jobs?{bad}")).status == 400, bad
    image_host.release()


async def test_csv_export_cut_short_is_visibly_incomplete(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # Big enough (about 10 MB) that the server is still writing when the job
    # manager stops; the client must then see a broken body, not a short "complete" file.
    client = await make_client(make_settings(export_chunk_rows=100))
    padding = "p" * 100
    visits = [
        visit(f"Z{v}", *(f"http://z.test/{padding}/{v}/{i}" for i in range(500)))
        for v in range(100)
    ]
    body = json.dumps(payload(*visits)).encode()
    created = await client.post(
        "/api/submit", data=io.BytesIO(body), headers={"Content-Type": "application/json"}
    )
    assert created.status == 201, await created.text()
    job_id = (await created.json())["job_id"]
    await wait_for_status(client, job_id)
    response = await client.get(f"/api/jobs/{job_id}/results?format=csv")
    assert response.status == 200
    first = await response.content.read(1024)
    assert first.startswith(b"store_id,")
    await client.app[keys.JOB_MANAGER].close()
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_job_list_pages_by_cursor(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings())
    # Unknown stores: each job fails as it is created, nothing is fetched.
    ids = [await submit(client, visit("NOPE", f"http://n.test/{n}")) for n in range(5)]
    seen: list[int] = []
    pages = 0
    cursor: dict[str, str] = {"limit": "2"}
    while True:
        response = await client.get("/api/jobs", params=cursor)
        assert response.status == 200
        page = await response.json()
        pages += 1
        seen += [job["job_id"] for job in page["jobs"]]
        if page["next_before"] is None:
            break
        assert page["next_before"] == page["jobs"][-1]["job_id"]
        cursor = {"limit": "2", "before": str(page["next_before"])}
    assert seen == ids[::-1]
    assert pages == 3
    # A job created after the first page never shifts the older pages.
    await submit(client, visit("NOPE", "http://n.test/new"))
    older = await (await client.get(f"/api/jobs?limit=2&before={ids[3]}")).json()
    assert [job["job_id"] for job in older["jobs"]] == [ids[2], ids[1]]
    # An exact last page says so: no empty page after it.
    last = await (await client.get(f"/api/jobs?limit=2&before={ids[2]}")).json()
    assert [job["job_id"] for job in last["jobs"]] == [ids[1], ids[0]]
    assert last["next_before"] is None
    # The cursor combines with the status filter.
    failed = await (await client.get(f"/api/jobs?status=failed&before={ids[1]}")).json()
    assert [job["job_id"] for job in failed["jobs"]] == [ids[0]]
    for bad in ("before=0", "before=x", "before=-3", "before=9007199254740992"):
        response = await client.get(f"/api/jobs?{bad}")
        assert response.status == 400, bad
        assert "before" in (await response.json())["error"]
