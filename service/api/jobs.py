"""HTTP routes. Each handler is thin: parse -> ask the job manager -> render."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import HttpVersion11, hdrs, web

from service.api import keys
from service.api.connections import GuardedRequestHandler
from service.api.content_coding import decode_body, request_coding
from service.api.errors import (
    BadRequest,
    ExpectationFailed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
)
from service.api.idempotency import REPLAYED_HEADER, has_idempotency_key, idempotency_key
from service.api.json_body import json_response
from service.api.middlewares import error_response
from service.api.params import page_limit, path_job_id
from service.api.schemas import (
    HealthSchema,
    JobCreatedSchema,
    JobDetailSchema,
    PageQuerySchema,
    RetryAcceptedSchema,
    Submission,
    parse_job_id,
)
from service.jobs.model import JobSummary

__all__ = ["routes"]

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Parsing and validating a body this large takes long enough to stall other
# requests, so it moves to a thread.
_THREAD_PARSE_BYTES = 256 * 1024

_created_schema = JobCreatedSchema()
_retried_schema = RetryAcceptedSchema()
_detail_schema = JobDetailSchema()
_health_schema = HealthSchema()
_page_query_schema = PageQuerySchema()


async def _read_json_object(request: web.Request) -> tuple[dict[str, Any], int]:
    """The body as a JSON object, and its decoded size in bytes (chunked bodies have no
    Content-Length)."""
    settings = request.app[keys.SETTINGS]
    limit = settings.max_body_bytes
    # Before the body is read: an unsupported coding is refused whatever it holds.
    coding = request_coding(request.headers.getall(hdrs.CONTENT_ENCODING, ()))
    timeout = settings.connections.body_timeout
    try:
        # One deadline for the whole body: a client trickling bytes gets no more time.
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        log.info(
            "request body not received in time",
            extra={"remote": request.remote, "content_length": request.content_length},
        )
        if isinstance(request.protocol, GuardedRequestHandler):
            request.protocol.close_without_reading_the_rest()
        raise RequestTimeout(f"request body not received within {timeout:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body larger than {limit} bytes") from None
    except ConnectionResetError:
        # The client hung up mid-upload: its fault, and no one is left to answer.
        log.info(
            "client disconnected mid-upload",
            extra={"remote": request.remote, "content_length": request.content_length},
        )
        raise BadRequest("request body incomplete: the client disconnected") from None
    # A compressed body decodes to up to the limit, however small it is.
    if coding is not None or len(raw) > _THREAD_PARSE_BYTES:
        return await asyncio.to_thread(_parse_body, raw, coding, limit)
    return _parse_body(raw, coding, limit)


def _parse_body(raw: bytes, coding: str | None, limit: int) -> tuple[dict[str, Any], int]:
    data = raw if coding is None else decode_body(raw, coding, limit)
    body = _decode_json(data)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body, len(data)


def _decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:  # also bad UTF-8, and integers past Python's digit limit
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None


async def _expect_within_limit(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` invites the body only when its declared length fits:
    over the limit, the 413 comes at once, before the client sends the body."""
    if request.version != HttpVersion11:
        return None  # RFC 9110 10.1.1: ignored in an HTTP/1.0 request
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() != "100-continue":
        return error_response(ExpectationFailed("only Expect: 100-continue is supported"))
    limit = request.app[keys.SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        response = error_response(PayloadTooLarge(f"request body larger than {limit} bytes"))
        # The body will not come, so this connection cannot carry another request.
        response.force_close()
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # As aiohttp's own handler does: the response proper has not started.
    request.writer.output_size = 0
    return None


@routes.post("/api/submit/", expect_handler=_expect_within_limit)
@routes.post("/api/submit", expect_handler=_expect_within_limit)
async def submit_job(request: web.Request) -> web.Response:
    manager = request.app[keys.JOB_MANAGER]
    if not has_idempotency_key(request):
        # A replay is answered even when the service is full, so only a submit without
        # a key is refused before its body is read.
        manager.check_admission()
    body, size = await _read_json_object(request)
    schema = request.app[keys.SUBMIT_SCHEMA]
    if size > _THREAD_PARSE_BYTES:
        submission: Submission = await asyncio.to_thread(schema.load, body)
    else:
        submission = schema.load(body)
    key = idempotency_key(request, body)
    created = await manager.submit(submission.visits, key, callback_url=submission.callback_url)
    headers = {REPLAYED_HEADER: "true"} if created.replayed else None
    response = json_response(_created_schema.dump({"job_id": created.job_id}), status=201)
    if headers:
        response.headers.update(headers)
    return response


@routes.get("/api/status")
async def job_status(request: web.Request) -> web.Response:
    # The assignment's contract: any missing, malformed or unknown id is 400 {}.
    job_id = parse_job_id(request.query.get("jobid"))
    summary = await request.app[keys.JOB_MANAGER].status(job_id) if job_id else None
    if summary is None:
        return json_response({}, status=400)
    # Built directly rather than through StatusSchema.dump (which documents it): the
    # hot poll, and a failed job's error list can name thousands of stores, where
    # marshmallow spends ~13 ms per 5,000 on the loop.
    return json_response(status_body(summary))


def status_body(summary: JobSummary) -> dict[str, Any]:
    """What /api/status answers for a job: its status, and its failed stores if any."""
    body: dict[str, Any] = {"status": summary.status.value, "job_id": summary.job_id}
    if summary.errors:
        body["error"] = _store_errors(summary)
    return body


@routes.post("/api/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    summary = await request.app[keys.JOB_MANAGER].cancel(path_job_id(request))
    # 202: images in flight may still finish and be recorded, though the job has ended.
    return json_response(status_body(summary), status=202)


@routes.post("/api/jobs/{job_id}/retry")
async def retry_job(request: web.Request) -> web.Response:
    job_id = path_job_id(request)
    queued = await request.app[keys.JOB_MANAGER].retry(job_id)
    return json_response(_retried_schema.dump({"job_id": job_id, "queued": queued}), status=202)


def _store_errors(summary: JobSummary) -> list[dict[str, str]]:
    return [{"store_id": e.store_id, "error": e.error} for e in summary.errors]


@routes.get("/api/jobs/{job_id}")
async def job_detail(request: web.Request) -> web.Response:
    job_id = path_job_id(request)
    page = _page_query_schema.load(dict(request.query))
    limit = page_limit(request, page.get("limit"))
    manager = request.app[keys.JOB_MANAGER]
    offset = page["offset"]
    if page["failed"]:
        # One more than the page: the next failed image's index is where the next page starts.
        found = await manager.failed_rows(job_id, offset, limit + 1)
    else:
        found = await manager.rows(job_id, offset, limit)
    if found is None:
        raise NotFound(f"job {job_id} not found")
    summary, rows = found
    if page["failed"]:
        next_offset = rows[limit].index if len(rows) > limit else None
        rows = rows[:limit]
    else:
        end = offset + len(rows)
        next_offset = end if rows and end < summary.total else None
    delivery = await manager.delivery(job_id)
    body = _detail_schema.dump(
        {
            "job_id": summary.job_id,
            "status": summary.status.value,
            "created_at": summary.created_at,
            "finished_at": summary.finished_at,
            "progress": {"total": summary.total, "done": summary.done, "failed": summary.failed},
            "offset": offset,
            "limit": limit,
            "next_offset": next_offset,
            "results": rows,
            "delivery": delivery,
        }
    )
    # Plain strings, added after the dump for the same reason as in job_status.
    body["error"] = _store_errors(summary)
    return json_response(body)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(_health_schema.dump({"status": "ok"}))
