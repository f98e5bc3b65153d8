"""Client faults at submit: a clear 4xx, never a 5xx or a traceback.

Text that UTF-8 cannot encode, bodies whose Content-Encoding lies or is unsupported,
``Expect: 100-continue`` for a body over the limit, and a client that hangs up mid-upload.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app, create_runner
from service.config import Settings
from service.logging_setup import configure_logging, stop_logging
from tests.support.fault_host import FaultHost
from tests.support.jobs import job_ids, submit, visit
from tests.support.polling import eventually, wait_for_status

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
    assert await job_ids(client) == []


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
    job_id = await submit(client, visit("RP00001", fault_host.url("/redirect-not-utf8")))
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


async def post_encoded(client: Client, body: bytes, coding: str) -> Any:
    return await client.post(
        "/api/submit/",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": coding},
    )


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODED_BODIES: list[tuple[str, str, bytes]] = [
    ("gzip", "gzip", gzip.compress(submission())),
    ("x-gzip", "x-gzip", gzip.compress(submission())),
    ("gzip in capitals", "GZIP", gzip.compress(submission())),
    ("deflate, zlib format", "deflate", zlib.compress(submission())),
    ("deflate, raw", "deflate", raw_deflate(submission())),
    ("identity", "identity", submission()),
    ("gzip then identity", "gzip, identity", gzip.compress(submission())),
]


@pytest.mark.parametrize(
    ("case", "coding", "body"), ENCODED_BODIES, ids=[case for case, _, _ in ENCODED_BODIES]
)
async def test_a_body_in_a_supported_coding_is_decoded(
    client: Client, case: str, coding: str, body: bytes
) -> None:
    response = await post_encoded(client, body, coding)
    assert response.status == 201, await response.text()


LYING_BODIES: list[tuple[str, str, bytes, str]] = [
    ("plain JSON sent as gzip", "gzip", submission(), "gzip: incorrect header check"),
    ("plain JSON sent as deflate", "deflate", submission(), "deflate: invalid"),
    ("gzip cut short", "gzip", gzip.compress(submission())[:-12], "gzip: it ends early"),
    ("empty gzip", "gzip", b"", "gzip: it ends early"),
    (
        "gzip with bytes after it",
        "gzip",
        gzip.compress(submission()) + b"{}",
        "gzip: data after its end",
    ),
    ("gzip sent as deflate", "deflate", gzip.compress(submission()), "deflate: invalid"),
]


@pytest.mark.parametrize(
    ("case", "coding", "body", "reason"), LYING_BODIES, ids=[c[0] for c in LYING_BODIES]
)
async def test_a_body_that_is_not_what_its_coding_says_is_400(
    client: Client, case: str, coding: str, body: bytes, reason: str
) -> None:
    response = await post_encoded(client, body, coding)
    assert response.status == 400
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert error.startswith(f"request body is not valid {reason}"), error
    assert await job_ids(client) == []


@pytest.mark.parametrize(
    ("coding", "shown"),
    [
        ("br", " 'br'"),
        ("zstd", " 'zstd'"),
        ("compress", " 'compress'"),
        ("gzip, gzip", " 'gzip, gzip'"),
        ("no-such-coding", " 'no-such-coding'"),
        ("x" * 100, ""),
    ],
    ids=["br", "zstd", "compress", "stacked", "unknown", "long"],
)
async def test_an_unsupported_coding_is_415_naming_the_ones_accepted(
    client: Client, coding: str, shown: str
) -> None:
    # RFC 9110 15.5.16: 415 for an unsupported content coding, with Accept-Encoding.
    response = await post_encoded(client, submission(), coding)
    assert response.status == 415
    assert response.headers["Accept-Encoding"] == "gzip, deflate"
    assert response.content_type == "application/json"
    assert await response.json() == {
        "error": f"unsupported Content-Encoding{shown}: send the body as gzip, deflate or identity"
    }
    assert await job_ids(client) == []


async def test_a_decoded_body_over_the_limit_is_413(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(max_body_bytes=1000))
    fits = submission() + b" " * (1000 - len(submission()))
    assert (await post_encoded(client, gzip.compress(fits), "gzip")).status == 201
    # 100 kB of spaces is about 130 bytes compressed: a small body that decodes big.
    bomb = gzip.compress(submission() + b" " * 100_000)
    assert len(bomb) < 1000
    response = await post_encoded(client, bomb, "gzip")
    assert response.status == 413
    assert (await response.json())["error"] == (
        "request body larger than 1000 bytes once decoded (gzip)"
    )


@pytest.mark.parametrize(
    ("framing", "declared"),
    [(b"Content-Length: 1000\r\n\r\n", 1000), (b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n", None)],
    ids=["content-length", "chunked"],
)
@pytest.mark.usefixtures("restore_root_logging")
async def test_a_client_gone_mid_upload_is_one_info_line_without_a_traceback(
    settings: Settings, framing: bytes, declared: int | None
) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    # The service's own runner: aiohttp's test server cancels the handler instead.
    runner = create_runner(create_app(settings))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        _, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        head = b"POST /api/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        writer.write(head + framing + submission()[:50])  # 50 of 1,000 bytes
        await writer.drain()
        server = runner.server
        assert server is not None

        async def handling() -> bool | None:
            return True if server.requests_count else None

        await eventually(handling)  # the handler is on its way to read the body
        writer.close()
        await writer.wait_closed()

        async def answered() -> bool | None:
            # The access line comes once the handler is done.
            return True if '"logger": "aiohttp.access"' in stream.getvalue() else None

        await eventually(answered, within=10)
    finally:
        await runner.cleanup()
    stop_logging()  # writes out what the writer thread holds
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry for entry in entries if entry["level"] != "info"] == []
    assert [entry for entry in entries if "exception" in entry] == []
    (gone,) = [entry for entry in entries if entry["logger"] == "service.api.jobs"]
    assert gone["message"] == "client disconnected mid-upload"
    assert gone["remote"] == "127.0.0.1"
    assert gone["content_length"] == declared


def expecting(length: int, expect: str = "100-continue") -> bytes:
    return (
        "POST /api/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nExpect: {expect}\r\n\r\n"
    ).encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One response: status line, headers (lower-case names) and its Content-Length body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, *lines = head.decode().removesuffix("\r\n\r\n").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    return status, headers, await asyncio.wait_for(reader.readexactly(length), 10)


async def test_expect_100_continue_over_the_limit_is_413_before_the_body_is_sent(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(max_body_bytes=1000))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(expecting(1001))  # the headers only
        await writer.drain()
        # The first answer is the 413 itself: no "100 Continue" invited the body.
        status, headers, body = await read_answer(reader)
        assert status.startswith("HTTP/1.1 413 "), status
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body) == {"error": "request body larger than 1000 bytes"}
        # The body never comes, so the connection cannot carry another request.
        assert headers["connection"] == "close"
    finally:
        writer.close()
    assert await job_ids(client) == []


async def test_expect_100_continue_within_the_limit_invites_the_body(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(make_settings(max_body_bytes=1000))
    body = submission()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(expecting(len(body)))
        await writer.drain()
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == (
            b"HTTP/1.1 100 Continue\r\n\r\n"
        )
        writer.write(body)
        await writer.drain()
        status, _, answer = await read_answer(reader)
        assert status.startswith("HTTP/1.1 201 "), (status, answer)
        assert json.loads(answer) == {"job_id": 1}
    finally:
        writer.close()


async def test_an_expectation_other_than_100_continue_is_417_in_json(client: Client) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(expecting(10, expect="something-else"))
        await writer.drain()
        status, _, body = await read_answer(reader)
        assert status.startswith("HTTP/1.1 417 "), status
        assert json.loads(body) == {"error": "only Expect: 100-continue is supported"}
    finally:
        writer.close()
