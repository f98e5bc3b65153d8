"""The OpenAPI 3 document, built by apispec from the marshmallow schemas, and its docs page."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from swagger_ui_bundle import swagger_ui_path

from service.api import keys
from service.api.auth import is_open
from service.api.errors import NotFound
from service.api.schemas import (
    AuthSchema,
    EmptySchema,
    ErrorSchema,
    HealthSchema,
    JobCreatedSchema,
    JobDetailSchema,
    JobListQuerySchema,
    JobListSchema,
    PageQuerySchema,
    ReadySchema,
    ReplicaListSchema,
    ResultsPageSchema,
    ResultsQuerySchema,
    RetryAcceptedSchema,
    StatsSchema,
    StatusSchema,
    SubmitSchema,
    WebhookBodySchema,
)
from service.api.ui import UI_ASSETS
from service.config import Settings

__all__ = ["DOCS_ASSETS", "build_openapi", "routes"]

routes = web.RouteTableDef()

OPENAPI_VERSION = "3.0.3"

# The Swagger UI files the docs page loads, with the content type each is served as.
DOCS_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}

_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Retail Pulse API</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api/docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui"});
  </script>
</body>
</html>
"""


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


_ERROR_400 = _json(ErrorSchema, "Invalid input; `details` holds the field messages.")
_ERROR_404 = _json(ErrorSchema, "No such job.")
_ERROR_503 = _json(ErrorSchema, "The service is shutting down.")
_JOB_ID = {
    "in": "path",
    "name": "job_id",
    "required": True,
    "description": "A job id as returned by submit (a positive integer); anything else is 400.",
    "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
}


_EVENTS_FORMAT = (
    "`text/event-stream`. Each event has an `id` `<job id>-<epoch>-<done + failed>`, an "
    "`event` name and one `data` line of JSON. `progress` (at most every 250 ms per job): "
    '`{"job_id", "done", "failed", "total"}`, where `done` counts every settled image, '
    "failed ones included. `done` (once per run of a job): the `/api/status` body, "
    '`{"status", "job_id", "error"?}`, with `status` `completed`, `failed` or `cancelled`. '
    "A comment line (`: heartbeat`) comes every `sse_heartbeat` seconds on an idle stream. "
    "When the service stops, or the reader falls too far behind, the stream ends with "
    "`retry: 1000`: reconnect, with `Last-Event-ID`."
)
# OpenAPI 3.0 has no way to describe a stream's items: by convention (schemathesis reads it
# so) the schema of an event stream describes each event, as an SSE parser yields it.
_EVENT_STREAM = {
    "description": "The event stream.",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["id", "event", "data"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+-[0-9]+-[0-9]+$"},
                    "event": {"type": "string", "enum": ["progress", "done"]},
                    "data": {"type": "string", "description": "One line of JSON."},
                },
            }
        }
    },
}
_STREAMS_503 = _json(
    ErrorSchema, "`max_event_streams` streams are open (`Retry-After: 1`), or shutting down."
)
_LAST_EVENT_ID = {
    "in": "header",
    "name": "Last-Event-ID",
    "required": False,
    "description": "The id of the last event the client received, when it reconnects.",
    "schema": {"type": "string", "maxLength": 64},
}

_WEBHOOK = {
    "post": {
        "summary": "The job ended: its status, posted to the submit's callback_url",
        "parameters": [
            {
                "in": "header",
                "name": "Retail-Pulse-Delivery",
                "required": True,
                "description": "The delivery's id: the same on every attempt of it.",
                "schema": {"type": "string"},
            },
            {
                "in": "header",
                "name": "Retail-Pulse-Signature",
                "required": True,
                "description": "`t=<unix seconds>,v1=<hex HMAC-SHA256 of "
                '"<t>.<raw body>" keyed with webhook_secret>`.',
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WebhookBodySchema}},
        },
        "responses": {"200": {"description": "Any 2xx: delivered. Anything else is tried again."}},
    }
}


def _operations(settings: Settings) -> dict[str, dict[str, Any]]:
    submit_schema = SubmitSchema(limits=settings.limits, webhooks=settings.webhooks.enabled)
    submit = {
        "post": {
            "summary": "Submit a job of store visits and their image URLs",
            "description": f"Limits (400 past them): at most {settings.max_images_per_job} "
            f"images per job; `store_id` up to {settings.max_store_id_length} characters, "
            f"`visit_time` up to {settings.max_visit_time_length}, each image URL up to "
            f"{settings.max_url_length}. The body may hold at most {settings.max_body_bytes} "
            "bytes (413 past it), and may be sent with `Content-Encoding: gzip` or `deflate` "
            "(the decoded body counts against the limit; other codings are 415). With "
            "`Expect: 100-continue`, a declared `Content-Length` over the limit is answered "
            "413 at once, without `100 Continue`. With an `Idempotency-Key`, a repeat of "
            "the same key and the same body (the same JSON once parsed) answers the first "
            "job's 201 with `Idempotent-Replayed: true`, even when the service is full; the "
            "same key with another body is 422. Two concurrent submits with one key create "
            "one job: the second waits for the first and gets the replay. A key is kept "
            "only with a 201, for `idempotency_ttl` seconds.\n\n"
            "**Completion webhook.** With `callback_url` (an absolute http(s) URL, up to "
            f"{settings.max_url_length} characters; a 400 unless the `webhook_secret` setting "
            "is set), the service POSTs the job's status there each time the job ends "
            "(completed, failed or cancelled; again after a retry, as a new delivery): the "
            "`/api/status` body plus `finished_at`, `progress` and `error_count`, the error "
            "list cut to the first 100 stores. Headers: `Content-Type: application/json`; "
            "`Retail-Pulse-Delivery: <id>`, the same on every attempt of one delivery, so a "
            "receiver can drop duplicates; `Retail-Pulse-Signature: t=<unix seconds>,v1=<hex "
            'HMAC-SHA256 of "<t>.<raw body>" keyed with webhook_secret>`. Any 2xx answer '
            "delivers it; anything else (3xx included: redirects are not followed), or no "
            f"answer, is tried again, up to {settings.webhook_max_attempts} attempts, after "
            f"{settings.webhook_retry_base:g} s, then twice as long each time, at most "
            f"{settings.webhook_retry_max_delay:g} s. A destination the address policy "
            "refuses (as for image URLs) is given up at once. `GET /api/jobs/<id>` shows the "
            "latest delivery.",
            "operationId": "submitJob",
            "parameters": [
                {
                    "in": "header",
                    "name": "Idempotency-Key",
                    "required": False,
                    "description": "Up to 255 printable ASCII characters, no spaces.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": submit_schema}},
            },
            "callbacks": {"jobEnded": {"{$request.body#/callback_url}": _WEBHOOK}},
            "responses": {
                "201": {
                    **_json(JobCreatedSchema, "The job was accepted (or replayed)."),
                    "headers": {
                        "Idempotent-Replayed": {
                            "description": "`true` when an Idempotency-Key named an "
                            "existing job and nothing new was created.",
                            "schema": {"type": "string", "enum": ["true"]},
                        }
                    },
                },
                "400": _ERROR_400,
                "408": _json(
                    ErrorSchema,
                    "The body did not arrive within `body_timeout`; the connection is closed.",
                ),
                "413": _json(ErrorSchema, "The request body is too large."),
                "415": _json(
                    ErrorSchema,
                    "Unsupported Content-Encoding; `Accept-Encoding` names the ones accepted.",
                ),
                "417": _json(ErrorSchema, "An `Expect` other than `100-continue`."),
                "422": _json(
                    ErrorSchema, "The Idempotency-Key was used before with a different body."
                ),
                "503": _ERROR_503,
            },
        }
    }
    return {
        "/api/submit": submit,
        "/api/submit/": {
            "post": {**submit["post"], "operationId": "submitJobSlash"},
        },
        "/api/status": {
            "get": {
                "summary": "A job's status, and its failed stores once it has failed",
                "operationId": "jobStatus",
                "parameters": [
                    {
                        "in": "query",
                        "name": "jobid",
                        "required": False,
                        "description": "The job id. Missing, malformed or unknown answers 400 {}.",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    }
                ],
                "responses": {
                    "200": _json(StatusSchema, "The job's status."),
                    "400": _json(EmptySchema, "Missing, malformed or unknown job id."),
                    "503": _ERROR_503,
                },
            }
        },
        "/api/jobs": {
            "get": {
                "summary": "Recent jobs, newest first, with status and progress",
                "description": f"`limit` defaults to {settings.default_page_size} and is "
                f"capped at {settings.max_page_size}. Paged by cursor: `next_before` is the "
                "`before` of the next (older) page, and null on the last one; a job "
                "created meanwhile never shifts a page.",
                "operationId": "listJobs",
                "parameters": [{"in": "query", "schema": JobListQuerySchema}],
                "responses": {
                    "200": _json(JobListSchema, "Recent jobs."),
                    "400": _ERROR_400,
                    "503": _ERROR_503,
                },
            }
        },
        "/api/jobs/{job_id}": {
            "get": {
                "summary": "A job's status, progress, store errors and a page of results",
                "description": "Results in submission order from image `offset`; "
                "`next_offset` is the next page's `offset`, null on the last page. With "
                "`failed=true`, only failed images from image `offset` on (each row's "
                "`index` says where it is), read through an index of failed images; "
                "`next_offset` is then the index of the next failed image.",
                "operationId": "jobDetail",
                "parameters": [_JOB_ID, {"in": "query", "schema": PageQuerySchema}],
                "responses": {
                    "200": _json(JobDetailSchema, "The job."),
                    "400": _ERROR_400,
                    "404": _ERROR_404,
                    "503": _ERROR_503,
                },
            }
        },
        "/api/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a job: no image of it starts any more",
                "description": "The status becomes `cancelled` at once. Images already in "
                "flight may finish; their results are recorded and shown. Images that never "
                "started stay unsettled, with `state: cancelled` in the job's results.",
                "operationId": "cancelJob",
                "parameters": [_JOB_ID],
                "responses": {
                    "202": _json(StatusSchema, "Cancelled; the body is the job's status."),
                    "400": _ERROR_400,
                    "404": _ERROR_404,
                    "409": _json(ErrorSchema, "The job had finished already."),
                    "503": _ERROR_503,
                },
            }
        },
        "/api/jobs/{job_id}/retry": {
            "post": {
                "summary": "Process a failed job's failed images again",
                "description": "Only for a `failed` job. Failures that cannot change are not "
                "retried: unknown store, refused address or redirect, invalid URL, too many "
                "pixels or JPEG scans, a decode deadline overrun. The job is `ongoing` again "
                "in a new run; measured images keep their results. Passes admission control "
                "like a submit.",
                "operationId": "retryJob",
                "parameters": [_JOB_ID],
                "responses": {
                    "202": _json(RetryAcceptedSchema, "Queued again."),
                    "400": _ERROR_400,
                    "404": _ERROR_404,
                    "409": _json(
                        ErrorSchema, "The job is not failed, or nothing in it can be retried."
                    ),
                    "503": _ERROR_503,
                },
            }
        },
        "/api/jobs/{job_id}/events": {
            "get": {
                "summary": "A job's live events (Server-Sent Events) until it ends",
                "description": _EVENTS_FORMAT
                + " This stream starts with the job's progress now (or, when the job has "
                "ended, its done event at once), sends a `progress` event as the job moves "
                "and ends after the `done` event. With `Last-Event-ID` naming the job's "
                "current state, that first progress event is left out.",
                "operationId": "jobEvents",
                "parameters": [_JOB_ID, _LAST_EVENT_ID],
                "responses": {
                    "200": _EVENT_STREAM,
                    "400": _ERROR_400,
                    "404": _ERROR_404,
                    "503": _STREAMS_503,
                },
            }
        },
        "/api/events": {
            "get": {
                "summary": "Live events of every job (Server-Sent Events); never ends",
                "description": _EVENTS_FORMAT
                + " This stream starts with the progress of the newest ongoing jobs (at most "
                f"{settings.max_page_size}, newest first), then sends every job's events as "
                "they happen. It stays open until the client or the service closes it.",
                "operationId": "allEvents",
                "responses": {"200": _EVENT_STREAM, "503": _STREAMS_503},
            }
        },
        "/api/jobs/{job_id}/results": {
            "get": {
                "summary": "A job's per-image results: a JSON page, or every row as CSV",
                "description": "`format=csv` streams the rows from `offset` (to the end, or "
                "`limit` rows) with columns store_id, store_name, area_code, visit_time, url, "
                "width, height, perimeter, error. A text cell starting with `=`, `+`, `-`, "
                "`@`, a tab or a carriage return is prefixed with `'` in the CSV only, so "
                "spreadsheets show it as text, not a formula. JSON pages are capped at "
                f"{settings.max_page_size} rows.",
                "operationId": "jobResults",
                "parameters": [_JOB_ID, {"in": "query", "schema": ResultsQuerySchema}],
                "responses": {
                    "200": {
                        "description": "The results.",
                        "content": {
                            "application/json": {"schema": ResultsPageSchema},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _ERROR_400,
                    "404": _ERROR_404,
                    "503": _ERROR_503,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the process serves HTTP",
                "operationId": "healthz",
                "responses": {"200": _json(HealthSchema, "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: store master loaded and the process pool answering",
                "operationId": "readyz",
                "responses": {
                    "200": _json(ReadySchema, "Ready for work."),
                    "503": _json(ReadySchema, "Not ready; `reason` says why."),
                },
            }
        },
        "/api/replicas": {
            "get": {
                "summary": "The processes serving the job store, with their last heartbeat",
                "operationId": "listReplicas",
                "responses": {"200": _json(ReplicaListSchema, "The replicas.")},
            }
        },
        "/api/stats": {
            "get": {
                "summary": "The dashboard's figures: throughput, work in hand, failures by kind",
                "description": "`images_per_second` covers the last five minutes, one point "
                "per 5-second bucket: `[end of the bucket in Unix seconds, images settled per "
                "second in it]`, oldest first. `in_flight` images are being downloaded or "
                "measured, `queued` ones are taken in but not started, `pending` ones are "
                "accepted and not settled (what admission control counts). "
                "`failures_by_kind` counts the failed images of the last five minutes. On "
                "PostgreSQL every figure is the sum over the live replicas (each writes its "
                "own every 5 seconds), so any replica answers alike; `ready` is the answering "
                "replica's readiness, with its `reason` when not ready.",
                "operationId": "stats",
                "responses": {"200": _json(StatsSchema, "The figures."), "503": _ERROR_503},
            }
        },
        "/api/auth": {
            "get": {
                "summary": "Whether the API needs a key (open; says nothing else)",
                "description": "`key_required` is true when `api_key` is set. A request that "
                "carries a key (`X-API-Key` or a bearer token) also gets `key_valid`: "
                "whether it is the right one. The dashboard asks this before its first data "
                "call, so a missing or mistyped key never costs a 401.",
                "operationId": "auth",
                "responses": {"200": _json(AuthSchema, "Whether a key is needed.")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics in the text exposition format",
                "operationId": "metrics",
                "responses": {"200": _text("text/plain", "The metrics.")},
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This OpenAPI document",
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "The document.")},
            }
        },
        "/api/docs": {
            "get": {
                "summary": "Interactive API documentation (Swagger UI)",
                "operationId": "docs",
                "responses": {"200": _text("text/html", "The docs page.")},
            }
        },
        "/ui": {
            "get": {
                "summary": "The dashboard, without its trailing slash: a redirect to /ui/",
                "operationId": "dashboardRedirect",
                "responses": {"301": {"description": "Moved to /ui/."}},
            }
        },
        "/ui/": {
            "get": {
                "summary": "The operator's dashboard (open; its data calls carry the key)",
                "description": "Jobs with live progress, one job's images and failed stores, "
                "the service's throughput, and a submit form. Served with a strict "
                "`Content-Security-Policy`.",
                "operationId": "dashboard",
                "responses": {"200": _text("text/html", "The page.")},
            }
        },
        "/ui/{name}": {
            "get": {
                "summary": "A static file of the dashboard",
                "operationId": "dashboardAsset",
                "parameters": [
                    {
                        "in": "path",
                        "name": "name",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(UI_ASSETS)},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            media_type.split(";")[0]: {"schema": {"type": "string"}}
                            for media_type in sorted(set(UI_ASSETS.values()))
                        },
                    },
                    "404": _json(ErrorSchema, "No such file."),
                },
            }
        },
        "/api/docs/assets/{name}": {
            "get": {
                "summary": "A static file of the docs page",
                "operationId": "docsAsset",
                "parameters": [
                    {
                        "in": "path",
                        "name": "name",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(DOCS_ASSETS)},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            media_type: {"schema": {"type": "string"}}
                            for media_type in sorted(set(DOCS_ASSETS.values()))
                        },
                    },
                    "404": _json(ErrorSchema, "No such file."),
                },
            }
        },
    }


def build_openapi(settings: Settings) -> dict[str, Any]:
    """The document for this service's routes, with the limits of ``settings``."""
    spec = APISpec(
        title="Retail Pulse",
        version="0.1.0",
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": "Store-visit image processing jobs."},
    )
    if settings.api_key:
        # Either header carries the key; OpenAPI lists alternatives as separate entries.
        spec.components.security_scheme(
            "apiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        )
        spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for path, operations in _operations(settings).items():
        if settings.api_key:
            _add_security(path, operations)
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _add_security(path: str, operations: dict[str, dict[str, Any]]) -> None:
    for operation in operations.values():
        # A templated path is open when its literal prefix is (the docs assets).
        if is_open(path.split("{", 1)[0]):
            operation["security"] = []
            continue
        operation["security"] = [{"apiKey": []}, {"bearer": []}]
        operation["responses"] = {
            **operation["responses"],
            "401": _json(ErrorSchema, "Missing or wrong API key."),
        }


@routes.get("/api/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[keys.OPENAPI])


@routes.get("/api/docs")
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_DOCS_PAGE, content_type="text/html")


@routes.get("/api/docs/assets/{name}")
async def docs_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    content_type = DOCS_ASSETS.get(name)
    if content_type is None:
        raise NotFound(f"no docs asset named {name!r}")
    return web.FileResponse(swagger_ui_path / name, headers={"Content-Type": content_type})
