"""Client faults at submit: text that UTF-8 cannot encode answers 400, before it is stored."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service import keys
from tests.support.fault_host import FaultHost
from tests.support.polling import wait_for_status

Client = TestClient[Any, Any]

URL = "http://127.0.0.1:9/a.jpg"


def submission(
    store_id: str = '"RP00001"', urls: str = f'"{URL}"', visit_time: str = '"t"'
) -> bytes:
    """A submission written by hand, so each string is exactly the JSON given."""
    visit = f'"store_id": {store_id}, "image_url": [{urls}], "visit_time": {visit_time}'
    return ('{"count": 1, "visits": [{' + visit + "}]}").encode()


async def post_raw(client: Client, body: bytes) -> Any:
    return await client.post(
        "/api/submit/", data=body, headers={"Content-Type": "application/json"}
    )


NOT_UNICODE = "Not valid Unicode: contains a lone surrogate."

LONE_SURROGATES: list[tuple[str, bytes, str]] = [
    ("store_id", submission(store_id='"RP\\ud800"'), "visits[0].store_id"),
    ("visit_time", submission(visit_time='"2026-01-01\\udfff"'), "visits[0].visit_time"),
    (
        "image_url",
        submission(urls=f'"{URL}", "http://127.0.0.1:9/\\udc80.jpg"'),
        "visits[0].image_url[1]",
    ),
    # json.loads also turns the three bytes that would encode U+D800 into one.
    (
        "visit_time as raw bytes",
        submission(visit_time='"t"').replace(b'"t"', b'"\xed\xa0\x80"'),
        "visits[0].visit_time",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "field"), LONE_SURROGATES, ids=[case for case, _, _ in LONE_SURROGATES]
)
async def test_a_lone_surrogate_is_400_naming_the_field(
    client: Client, case: str, body: bytes, field: str
) -> None:
    response = await post_raw(client, body)
    assert response.status == 400
    assert response.content_type == "application/json"
    raw = await response.read()
    assert json.loads(raw)["error"] == f"{field}: {NOT_UNICODE}"
    assert client.app[keys.JOB_STORE].recent(10) == []


async def test_a_lone_surrogate_in_a_key_is_400_and_the_answer_does_not_quote_it(
    client: Client,
) -> None:
    body = submission().replace(b'"visit_time": "t"', b'"visit_time": "t", "x\\ud800": 1')
    response = await post_raw(client, body)
    assert response.status == 400
    raw = await response.read()
    assert json.loads(raw)["error"] == (
        "visits[0]: A key is not valid Unicode: it contains a lone surrogate."
    )
    # Not even as an escape: a strict parser would refuse the whole answer.
    assert b"\\ud800" not in raw
    raw.decode("utf-8")


async def test_a_surrogate_pair_is_ordinary_text(client: Client) -> None:
    # Two escapes that together make one character outside the BMP are valid JSON text.
    response = await post_raw(client, submission(visit_time='"visit \\ud83d\\ude00"'))
    assert response.status == 201, await response.text()
    job_id = (await response.json())["job_id"]
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert detail["results"][0]["visit_time"] == "visit \U0001f600"


async def test_an_error_quoting_bytes_that_are_not_utf8_still_exports(
    client: Client, fault_host: FaultHost
) -> None:
    # Submit refuses such text, but a remote host can still send it: here in a redirect's
    # Location, which the image's error quotes. Every view must still encode it.
    response = await client.post(
        "/api/submit/",
        json={
            "count": 1,
            "visits": [
                {
                    "store_id": "RP00001",
                    "image_url": [fault_host.url("/redirect-not-utf8")],
                    "visit_time": "t",
                }
            ],
        },
    )
    assert response.status == 201
    job_id = (await response.json())["job_id"]
    await wait_for_status(client, job_id)
    expected = "redirect to a non-http(s) URL: ftp://127.0.0.1/\ufffd\ufffd.jpg"

    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/results"):
        page = await (await client.get(path)).read()
        assert b"\\ud" not in page
        assert json.loads(page.decode("utf-8"))["results"][0]["error"] == expected
    status = await (await client.get("/api/status", params={"jobid": str(job_id)})).json()
    assert status["error"][0]["error"].endswith(expected)

    export = await client.get(f"/api/jobs/{job_id}/results", params={"format": "csv"})
    assert export.status == 200
    rows = list(csv.DictReader(io.StringIO((await export.read()).decode("utf-8"))))
    assert [row["error"] for row in rows] == [expected]
