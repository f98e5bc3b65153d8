"""The one place that turns exceptions into JSON error bodies."""

from __future__ import annotations

import logging
import math

from aiohttp import web
from aiohttp.typedefs import Handler
from marshmallow import ValidationError

from service.api.errors import ApiError
from service.api.schemas import flatten_messages
from service.errors import IdempotencyMismatch, JobConflict, JobError, JobNotFound, ServiceError

__all__ = ["error_middleware", "error_response"]

log = logging.getLogger(__name__)

MAX_MESSAGES_IN_SUMMARY = 5

_JOB_ERROR_STATUS: dict[type[JobError], int] = {
    JobNotFound: 404,
    JobConflict: 409,
    IdempotencyMismatch: 422,
}


def error_body(message: str, details: object = None) -> dict[str, object]:
    body: dict[str, object] = {"error": message}
    if details is not None:
        body["details"] = details
    return body


def error_response(exc: ApiError) -> web.Response:
    """The JSON answer to ``exc``; also for what answers before the middlewares run."""
    response = web.json_response(
        error_body(exc.message, exc.details), status=exc.status, headers=exc.headers
    )
    if exc.closes_connection:
        response.force_close()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except JobError as exc:
        return web.json_response(error_body(exc.message), status=_JOB_ERROR_STATUS[type(exc)])
    except ServiceError as exc:
        # Overloaded or shutting down: the client should come back, and says when.
        retry_after = str(max(1, math.ceil(exc.retry_after)))
        return web.json_response(
            error_body(exc.message), status=503, headers={"Retry-After": retry_after}
        )
    except ValidationError as exc:
        lines = flatten_messages(exc.messages)
        summary = "; ".join(lines[:MAX_MESSAGES_IN_SUMMARY])
        if len(lines) > MAX_MESSAGES_IN_SUMMARY:
            summary += f"; and {len(lines) - MAX_MESSAGES_IN_SUMMARY} more problems"
        return web.json_response(error_body(summary, exc.messages), status=400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own errors (404 route, 405, 413 body too large) also answer in JSON.
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return web.json_response(error_body(exc.reason), status=exc.status, headers=headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response(error_body("internal server error"), status=500)
