"""Property tests: whatever a client sends, the API answers with JSON and never a 5xx.

Each test function runs one service on a private event loop (``asyncio.Runner``)
and lets Hypothesis drive requests through it synchronously; this keeps
Hypothesis away from pytest-asyncio's per-test loops and async fixtures.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.config import Settings
from tests.support.jobs import payload, visit

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # In CI the same examples every run, so a red build can be replayed and never
    # depends on luck; on developers' machines every run explores new inputs.
    derandomize=bool(os.environ.get("CI")),
)

# Nothing here may reach beyond loopback: the only well-formed URLs point at a
# closed loopback port, and generated text never contains a scheme separator.
_TEXT = st.text(max_size=30).filter(lambda text: "://" not in text)
_URLS = (
    st.sampled_from(
        ["http://127.0.0.1:9/a.jpg", "https://127.0.0.1:9/b.png", "ftp://x/y", "not a url", ""]
    )
    | _TEXT
)

_JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | _TEXT
_ANY_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner),
    max_leaves=20,
)


def _field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all."""
    return st.one_of(valid, valid, _ANY_JSON)


_VISIT = st.fixed_dictionaries(
    {
        "store_id": _field(st.sampled_from(["RP00001", "S00339218", "UNKNOWN", ""])),
        "image_url": _field(st.lists(_URLS, max_size=3)),
        "visit_time": _field(_TEXT),
    },
    optional={"extra": _ANY_JSON},
)
_SUBMISSION = st.fixed_dictionaries(
    {"count": _field(st.integers(-1, 4)), "visits": _field(st.lists(_VISIT, max_size=3))},
    optional={"unexpected": _ANY_JSON},
)
_QUERY_TEXT = st.text(max_size=40)
# Numbers too, up to far past 64 bits: some are echoed back in the answer.
_QUERY_VALUE = _QUERY_TEXT | st.integers().map(str) | st.integers(2**60, 2**80).map(str)
_QUERY = st.dictionaries(
    st.sampled_from(["jobid", "offset", "limit", "format", "status", "x", ""]) | _QUERY_TEXT,
    _QUERY_VALUE,
    max_size=3,
)
# A page query: each known parameter present half the time, so a huge offset on its own
# (which the page echoes back) is common, not a one-in-a-thousand draw.
_PAGE_QUERY = st.fixed_dictionaries(
    {},
    optional={
        "offset": _QUERY_VALUE,
        "limit": _QUERY_VALUE,
        "format": st.sampled_from(["json", "csv"]) | _QUERY_TEXT,
    },
)


class ServiceDriver:
    """Runs coroutines against one started service on a private loop."""

    def __init__(self, run: Callable[[Coroutine[Any, Any, Any]], Any], client: Any) -> None:
        self._run = run
        self.client: TestClient[Any, Any] = client

        self.requests = 0

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, str, bytes]:
        self.requests += 1

        async def call() -> tuple[int, str, bytes]:
            async with self.client.request(method, path, **kwargs) as response:
                return response.status, response.content_type, await response.read()

        result: tuple[int, str, bytes] = self._run(call())
        return result


@contextmanager
def running_service(service_settings: Settings) -> Iterator[ServiceDriver]:
    async def start() -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(service_settings)))
        await client.start_server()
        return client

    with asyncio.Runner() as runner:
        client = runner.run(start())
        try:
            yield ServiceDriver(runner.run, client)
        finally:
            runner.run(client.close())


def _assert_json_and_not_5xx(status: int, content_type: str, body: bytes) -> None:
    assert status < 500, body
    assert content_type == "application/json", (status, body)
    json.loads(body)


def test_any_json_body_to_submit_gets_a_json_answer_below_500(
    make_settings: Callable[..., Settings],
) -> None:
    with running_service(make_settings(workers=1)) as service:

        @EXAMPLES
        @given(body=_SUBMISSION | _ANY_JSON)
        def check(body: Any) -> None:
            _assert_json_and_not_5xx(*service.request("POST", "/api/submit/", json=body))

        check()
        # Hypothesis really ran the examples (not, say, zero because of a filter).
        assert service.requests >= 100


def test_any_bytes_to_submit_get_a_json_answer_below_500(
    make_settings: Callable[..., Settings],
) -> None:
    with running_service(make_settings(workers=1)) as service:

        @EXAMPLES
        @given(
            body=st.binary(max_size=200),
            content_type=st.sampled_from(["application/json", "text/plain", "", "x/y; a=b"]),
        )
        def check(body: bytes, content_type: str) -> None:
            headers = {"Content-Type": content_type} if content_type else {}
            _assert_json_and_not_5xx(
                *service.request("POST", "/api/submit/", data=body, headers=headers)
            )

        check()
        # Hypothesis really ran the examples (not, say, zero because of a filter).
        assert service.requests >= 100


def test_any_query_to_status_job_detail_and_results_gets_a_json_answer_below_500(
    make_settings: Callable[..., Settings],
) -> None:
    with running_service(make_settings(workers=1)) as service:
        # One real job, so the found-job paths are exercised too.
        status, _, body = service.request(
            "POST",
            "/api/submit/",
            json=payload(visit("NOPE", "http://127.0.0.1:9/")),
        )
        assert status == 201, body

        @EXAMPLES
        @given(
            query=_QUERY,
            page=_PAGE_QUERY,
            raw_query=_QUERY_TEXT,
            job_id=st.sampled_from(["1", "0", "-1", "99999999999999999999", "\uff11"])
            | _QUERY_TEXT,
        )
        def check(query: dict[str, str], page: dict[str, str], raw_query: str, job_id: str) -> None:
            _assert_json_and_not_5xx(*service.request("GET", "/api/status", params=query))
            _assert_json_and_not_5xx(
                *service.request("GET", "/api/status?" + quote(raw_query, safe="=&"))
            )
            path = "/api/jobs/" + quote(job_id, safe="")
            _assert_json_and_not_5xx(*service.request("GET", path, params=query))
            # The real job's pages echo offset and limit back.
            _assert_json_and_not_5xx(*service.request("GET", "/api/jobs/1", params=page))
            if page.get("format") != "csv":  # a CSV export is not JSON
                results = service.request("GET", "/api/jobs/1/results", params=page)
                _assert_json_and_not_5xx(*results)

        check()
        # Hypothesis really ran the examples (not, say, zero because of a filter).
        assert service.requests >= 100


def test_the_property_check_itself_can_fail() -> None:
    # Guards the guard: a 500 or a non-JSON answer must trip the assertion.
    for bad in ((500, "application/json", b"{}"), (200, "text/plain", b"ok")):
        try:
            _assert_json_and_not_5xx(*bad)
        except AssertionError:
            continue
        raise AssertionError(f"{bad} passed the check")
