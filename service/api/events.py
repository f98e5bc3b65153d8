"""Live events as Server-Sent Events: ``GET /api/jobs/<id>/events`` and ``GET /api/events``.

Written on ``web.StreamResponse`` rather than aiohttp-sse: aiohttp-sse pings from a second
task per connection, writing beside the handler, where here the handler's own wait for
events times out into the heartbeat; and the framing below is a few lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from aiohttp import web

from service.api import keys
from service.api.errors import NotFound
from service.api.jobs import status_body
from service.api.params import path_job_id
from service.jobs.events import EventKind, EventStream, JobEvent, StreamEnd, StreamsFull

__all__ = ["HEARTBEAT", "LAST_EVENT_ID", "RECONNECT_MS", "routes"]

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

LAST_EVENT_ID = "Last-Event-ID"
# What a client is told to wait before reconnecting when its stream ends early (shutdown:
# another replica will answer; fallen behind: a fresh start).
RECONNECT_MS = 1000
# A comment line: ignored by SSE parsers, and traffic for proxies that close quiet streams.
HEARTBEAT = b": heartbeat\n\n"
# no-cache: never replayed from a cache; X-Accel-Buffering: nginx passes events on at once.
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# No HEAD: it would hold a stream open that can send nothing.
@routes.get("/api/jobs/{job_id}/events", allow_head=False)
async def job_events(request: web.Request) -> web.StreamResponse:
    job_id = path_job_id(request)
    hub = request.app[keys.EVENT_HUB]
    with _counting_refusals(request):
        stream = await hub.watch_job(
            job_id, _connected(request), request.headers.get(LAST_EVENT_ID)
        )
    if stream is None:
        raise NotFound(f"job {job_id} not found")
    return await _send(request, stream)


@routes.get("/api/events", allow_head=False)
async def all_events(request: web.Request) -> web.StreamResponse:
    hub = request.app[keys.EVENT_HUB]
    with _counting_refusals(request):
        stream = await hub.watch_all(_connected(request))
    return await _send(request, stream)


@contextlib.contextmanager
def _counting_refusals(request: web.Request) -> Iterator[None]:
    try:
        yield
    except StreamsFull:
        request.app[keys.METRICS].event_streams_refused.inc()
        raise


def _connected(request: web.Request) -> Callable[[], bool]:
    def connected() -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()

    return connected


async def _send(request: web.Request, stream: EventStream) -> web.StreamResponse:
    hub = request.app[keys.EVENT_HUB]
    heartbeat = request.app[keys.SETTINGS].sse_heartbeat
    response = web.StreamResponse(headers=_HEADERS)
    response.content_type = "text/event-stream"
    try:
        await response.prepare(request)
        while True:
            events = await stream.next(heartbeat)
            if events is None:
                if stream.ended is not None and stream.ended is not StreamEnd.GONE:
                    hint = f": {stream.ended.value}\nretry: {RECONNECT_MS}\n\n"
                    await response.write(hint.encode())
                break
            if not events:
                await response.write(HEARTBEAT)
                continue
            # A job's own stream ends with its done event.
            sent, finished = _until_done(events) if stream.job_id is not None else (events, False)
            await response.write(b"".join(map(frame, sent)))
            if finished:
                break
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away: nothing to answer, nothing went wrong here
    finally:
        hub.release(stream)
    return response


def _until_done(events: Sequence[JobEvent]) -> tuple[Sequence[JobEvent], bool]:
    for position, event in enumerate(events):
        if event.kind is EventKind.DONE:
            return events[: position + 1], True
    return events, False


def event_data(event: JobEvent) -> dict[str, Any]:
    """A progress event's counts, or a done event's /api/status body."""
    summary = event.summary
    if event.kind is EventKind.DONE:
        return status_body(summary)
    return {
        "job_id": summary.job_id,
        "done": summary.done,
        "failed": summary.failed,
        "total": summary.total,
    }


def frame(event: JobEvent) -> bytes:
    """The event as SSE lines, encoded once however many streams send it."""
    if event.encoded is None:
        data = event_data(event)
        try:
            body = orjson.dumps(data)
        except TypeError:  # what orjson refuses but JSON allows (an integer past 64 bits)
            body = json.dumps(data).encode()
        event.encoded = b"id: %s\nevent: %s\ndata: %s\n\n" % (
            event.id.encode(),
            event.kind.value.encode(),
            body,
        )
    return event.encoded
