"""The dashboard's one live connection: GET /api/events read with fetch and its SSE parser.

A small stand-in service serves the real page and scripted events in the documented
format (``progress`` with job_id, done, failed, total; then ``done`` with the status
body), so the page's side of the stream is tested on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from service.api.ui import routes as ui_routes
from tests.browser.conftest import Dashboard

pytestmark = pytest.mark.browser

KEY = "stream-key"


class StandIn:
    """The few routes the jobs view reads, and an event stream fed by the test."""

    def __init__(self, *, stream: bool = True) -> None:
        self.stream = stream
        self.list_times: list[float] = []
        self.chunks: asyncio.Queue[str] = asyncio.Queue()
        self.job = {
            "job_id": 7,
            "status": "ongoing",
            "created_at": "2026-11-29T10:00:00+00:00",
            "finished_at": None,
            "progress": {"total": 10, "done": 0, "failed": 0},
        }
        self.list_calls = 0
        self.streams: list[dict[str, str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(ui_routes)
        app.router.add_get("/api/auth", self.auth)
        app.router.add_get("/api/jobs", self.jobs)
        app.router.add_get("/api/events", self.events)
        return app

    async def auth(self, request: web.Request) -> web.Response:
        body: dict[str, bool] = {"key_required": True}
        if "X-API-Key" in request.headers:
            body["key_valid"] = request.headers["X-API-Key"] == KEY
        return web.json_response(body)

    async def jobs(self, request: web.Request) -> web.Response:
        assert request.headers.get("X-API-Key") == KEY
        self.list_calls += 1
        self.list_times.append(time.monotonic())
        return web.json_response({"jobs": [self.job], "next_before": None})

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.streams.append(
            {"key": request.headers.get("X-API-Key", ""), "query": request.query_string}
        )
        if not self.stream:
            # As the service refuses a stream past max_event_streams.
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "1"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while True:
            await response.write((await self.chunks.get()).encode())


def progress(done: int, failed: int = 0) -> str:
    data = json.dumps({"job_id": 7, "done": done, "failed": failed, "total": 10})
    return f"id: 7-0-{done}\nevent: progress\ndata: {data}\n\n"


async def test_progress_arrives_through_one_stream_that_carries_the_key(
    aiohttp_server: Any, open_dashboard: Callable[..., Any]
) -> None:
    stand_in = StandIn()
    server = await aiohttp_server(stand_in.app())
    dashboard: Dashboard = await open_dashboard(str(server.make_url("/")))
    page = dashboard.page
    await page.goto(str(server.make_url("/ui/")))
    await page.get_by_label("API key").fill(KEY)
    await page.get_by_role("button", name="Use this key").click()
    bar = page.locator('#jobs tr[data-job="7"] progress')
    await bar.wait_for()
    await page.get_by_text("Live: event stream").wait_for()
    calls_before = stand_in.list_calls
    # A heartbeat comment, a retry hint, and events split across writes with CRLF endings.
    await stand_in.chunks.put(": heartbeat\n\nretry: 2000\n\n")
    await stand_in.chunks.put(progress(3).replace("\n", "\r\n")[:25])
    await stand_in.chunks.put(progress(3).replace("\n", "\r\n")[25:])
    await page.wait_for_function(
        "() => document.querySelector('#jobs tr[data-job=\"7\"] progress').value === 3"
    )
    await stand_in.chunks.put(progress(6, failed=1))
    await page.locator('#jobs tr[data-job="7"]', has_text="6 / 10 (1 failed)").wait_for()
    # The progress came from the stream, not from asking the list again.
    assert stand_in.list_calls == calls_before
    # Other views share the one connection (browsers allow six per host).
    await page.get_by_role("link", name="Submit").click()
    await page.get_by_role("heading", name="Submit a job").wait_for()
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await bar.wait_for()
    # The done event has the page read the list once more: the finished job.
    stand_in.job = {
        **stand_in.job,
        "status": "completed",
        "finished_at": "2026-11-29T10:00:09+00:00",
        "progress": {"total": 10, "done": 10, "failed": 0},
    }
    await stand_in.chunks.put(
        f"id: 7-0-10\nevent: done\ndata: {json.dumps({'status': 'completed', 'job_id': 7})}\n\n"
    )
    await page.locator('#jobs tr[data-job="7"] .status', has_text="completed").wait_for()
    assert len(stand_in.streams) == 1
    # The key travels in a header, never in the URL (where access logs would keep it).
    assert stand_in.streams[0] == {"key": KEY, "query": ""}
    assert not any(KEY in url for url in dashboard.requests)


async def test_the_parsers_take_what_a_stream_and_a_spreadsheet_send(
    aiohttp_server: Any, open_dashboard: Callable[..., Any]
) -> None:
    # The page's own modules, run in the browser on inputs a test can spell out.
    server = await aiohttp_server(StandIn().app())
    dashboard: Dashboard = await open_dashboard(str(server.make_url("/")))
    page = dashboard.page
    await page.goto(str(server.make_url("/ui/")))
    await page.get_by_role("heading", name="API key needed").wait_for()
    events = await page.evaluate(
        """async () => {
            const { sseParser } = await import("/ui/api.js");
            const seen = [];
            const retries = [];
            const feed = sseParser((event) => seen.push(event), (ms) => retries.push(ms));
            // A comment, CRLF split between chunks, a field without a space, two data
            // lines, an event with no data (dropped), a retry, and bare CR endings.
            for (const chunk of [": hi\\r\\n\\r", "\\nid: 1-0-3\\r\\nevent: progress\\r\\n",
                                 "data:{\\"a\\":1}\\r\\n\\r\\n", "data: x\\ndata: y\\n\\n",
                                 "event: done\\n\\n", "retry: 1500\\n\\n",
                                 "event: done\\rdata: z\\r\\r"]) {
                feed(chunk);
            }
            return { seen, retries };
        }"""
    )
    assert events["seen"] == [
        {"event": "progress", "data": '{"a":1}', "id": "1-0-3"},
        {"event": "message", "data": "x\ny", "id": "1-0-3"},
        {"event": "done", "data": "z", "id": "1-0-3"},
    ]
    assert events["retries"] == [1500]
    csv_text = (
        "\ufeffvisit_time,store_id,image_url,extra\r\n"
        '"t1",S1,"http://h/a?x=1,2",z\r\n'
        "t1,S1,http://h/b,\r\n"
        '"say ""hi""",S2,http://h/c,\n'
        "\n"
    )
    visits = await page.evaluate(
        """async (text) => {
            const { parseCsv, visitsFromRows } = await import("/ui/csv.js");
            const visits = visitsFromRows(parseCsv(text));
            let missing = null;
            try {
                visitsFromRows(parseCsv("store_id,url\\nS1,http://h/a\\n"));
            } catch (error) {
                missing = error.message;
            }
            return { visits, missing };
        }""",
        csv_text,
    )
    assert visits["visits"] == [
        {"store_id": "S1", "image_url": ["http://h/a?x=1,2", "http://h/b"], "visit_time": "t1"},
        {"store_id": "S2", "image_url": ["http://h/c"], "visit_time": 'say "hi"'},
    ]
    assert "missing: image_url, visit_time" in visits["missing"]


async def test_refused_a_stream_the_page_polls_at_most_once_a_second(
    aiohttp_server: Any, open_dashboard: Callable[..., Any]
) -> None:
    stand_in = StandIn(stream=False)
    server = await aiohttp_server(stand_in.app())
    dashboard: Dashboard = await open_dashboard(str(server.make_url("/")))
    page = dashboard.page
    await page.goto(str(server.make_url("/ui/")))
    await page.get_by_label("API key").fill(KEY)
    await page.get_by_role("button", name="Use this key").click()
    await page.get_by_text("Live: polling every second").wait_for()
    # The job moves on the service; the page finds out by asking again.
    for done in (2, 5, 9):
        stand_in.job = {**stand_in.job, "progress": {"total": 10, "done": done, "failed": 0}}
        await page.locator('#jobs tr[data-job="7"]', has_text=f"{done} / 10").wait_for()
    # Never faster than once a second (slowness can only widen the gaps).
    gaps = [later - earlier for earlier, later in itertools.pairwise(stand_in.list_times)]
    assert len(gaps) >= 2
    assert min(gaps[1:]) >= 0.9, gaps
    # It asked for the stream first, and polls because it was refused.
    assert stand_in.streams[0] == {"key": KEY, "query": ""}
    # Chromium logs each refused request; nothing else may reach the console.
    assert [line for line in dashboard.console_errors if "503" not in line] == []
    dashboard.console_errors.clear()
