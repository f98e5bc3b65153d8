"""Request and response schemas: the one description of the wire format.

The request schemas validate and build domain objects; the response schemas
render them (and are what an OpenAPI document would be generated from).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)
from yarl import URL

from service.config import LimitSettings
from service.jobs.deliveries import DeliveryState
from service.jobs.model import ImageState, JobStatus, Visit, normalise_visit_time
from service.url_credentials import credentials_refusal, credentials_refusals, masked_urls

__all__ = [
    "MAX_OFFSET",
    "AuthSchema",
    "DeliverySchema",
    "EmptySchema",
    "ErrorSchema",
    "HealthSchema",
    "ImageResultSchema",
    "JobCreatedSchema",
    "JobDetailSchema",
    "JobListQuerySchema",
    "JobListSchema",
    "PageQuerySchema",
    "ReadySchema",
    "ReplicaListSchema",
    "ResultsPageSchema",
    "ResultsQuerySchema",
    "RetryAcceptedSchema",
    "StatsSchema",
    "StatusSchema",
    "StoreErrorSchema",
    "Submission",
    "SubmitSchema",
    "WebhookBodySchema",
    "flatten_messages",
    "parse_job_id",
]


@dataclass(frozen=True, slots=True)
class Submission:
    visits: tuple[Visit, ...]
    # As given: credentials (when allowed) are needed to post to it, and masked where shown.
    callback_url: str | None = None


WEBHOOKS_OFF = (
    "Needs the webhook_secret setting, which signs every delivery; set webhook_secret "
    "(RP_WEBHOOK_SECRET) to accept callback_url."
)


_WHITESPACE = re.compile(r"\s")

# Offsets are echoed in responses; past 2**53 - 1 a JSON number loses precision in
# many clients (and past 2**63 - 1 orjson cannot encode it). No job comes close.
MAX_OFFSET = 2**53 - 1


def _http_url(value: str) -> None:
    # One yarl parse (the downloader's own parser, so what passes here it can
    # fetch) and a C-level whitespace scan: this runs for every URL of a job.
    try:
        url = URL(value)
        host = url.host  # decoding the host (IDNA) is part of the check
        url.port  # noqa: B018 - raises ValueError on a bad port
    except (ValueError, UnicodeError):
        raise ValidationError("Not a valid URL.") from None
    if url.scheme not in ("http", "https") or not host:
        raise ValidationError("Not an absolute http(s) URL.")
    if _WHITESPACE.search(value):
        raise ValidationError("Not a valid URL: contains whitespace.")


_NOT_UNICODE = "Not valid Unicode: contains a lone surrogate."
_KEY_NOT_UNICODE = "A key is not valid Unicode: it contains a lone surrogate."


def _encodes(text: str) -> bool:
    if text.isascii():  # the common case, and a fast C scan
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _add_message(messages: dict[str | int, Any], path: tuple[str | int, ...], text: str) -> None:
    node = messages
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node.setdefault(path[-1] if path else "_schema", []).append(text)


def _unencodable_text(document: Any) -> dict[str | int, Any]:
    """Field messages for every string and key of a parsed JSON document that UTF-8
    cannot encode: lone surrogates, which ``json.loads`` makes from a ``\\ud800``
    escape or from the three bytes that would encode one."""
    messages: dict[str | int, Any] = {}
    # A loop, not recursion: the document may nest as deeply as json.loads allows.
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            if not _encodes(value):
                _add_message(messages, path, _NOT_UNICODE)
        elif isinstance(value, dict):
            children: list[tuple[Any, tuple[str | int, ...]]] = []
            for key, item in value.items():
                if _encodes(key):
                    children.append((item, (*path, key)))
                else:
                    _add_message(messages, (*path, "_schema"), _KEY_NOT_UNICODE)
            pending.extend(reversed(children))  # popped in document order
        elif isinstance(value, list):
            pending.extend((value[i], (*path, i)) for i in range(len(value) - 1, -1, -1))
    return messages


class VisitSchema(Schema):
    class Meta:
        unknown = RAISE

    store_id = fields.String(required=True, validate=validate.Length(min=1))
    image_url = fields.List(
        fields.String(validate=_http_url),
        required=True,
        validate=validate.Length(min=1, error="Must be a non-empty list of URLs."),
    )
    visit_time = fields.String(required=True, validate=validate.Length(min=1))


class SubmitSchema(Schema):
    """``{"count": int, "visits": [...]}``; count must equal the number of visits."""

    class Meta:
        unknown = RAISE

    count = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    visits = fields.List(
        fields.Nested(VisitSchema),
        required=True,
        validate=validate.Length(min=1, error="Must contain at least one visit."),
    )
    callback_url = fields.String(
        validate=_http_url,
        load_default=None,
        metadata={
            "description": "Where to POST the job's status once it ends (a signed webhook; "
            "see the submit description). Needs the webhook_secret setting."
        },
    )

    def __init__(self, *, limits: LimitSettings, webhooks: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits
        # Whether a webhook_secret is set: without one a delivery could not be signed.
        self.webhooks = webhooks

    @pre_load
    def _check_text(self, data: Any, **_: Any) -> Any:
        # Text that UTF-8 cannot encode breaks the CSV export and makes JSON that
        # strict parsers refuse. Checked before the fields, so no error message
        # quotes such a key either.
        problems = _unencodable_text(data)
        if problems:
            raise ValidationError(problems)
        return data

    @validates_schema
    def _check_limits(self, data: dict[str, Any], **_: Any) -> None:
        visits = data.get("visits", [])
        if "count" in data and data["count"] != len(visits):
            raise ValidationError(
                f"count is {data['count']} but visits has {len(visits)} entries.", "count"
            )
        errors: dict[str, Any] = {}
        images = 0
        for position, visit in enumerate(visits):
            problems: dict[str, Any] = {}
            if len(visit["store_id"]) > self.limits.max_store_id_length:
                problems["store_id"] = [
                    f"Longer than {self.limits.max_store_id_length} characters."
                ]
            # Every result row repeats its visit's time: unbounded, a small POST
            # would make every page of results huge.
            if len(visit["visit_time"]) > self.limits.max_visit_time_length:
                problems["visit_time"] = [
                    f"Longer than {self.limits.max_visit_time_length} characters."
                ]
            long_urls = {
                index: [f"Longer than {self.limits.max_url_length} characters."]
                for index, url in enumerate(visit["image_url"])
                if len(url) > self.limits.max_url_length
            }
            if long_urls:
                problems["image_url"] = long_urls
            if problems:
                errors[str(position)] = problems
            images += len(visit["image_url"])
        if errors:
            raise ValidationError({"visits": errors})
        if images > self.limits.max_images_per_job:
            raise ValidationError(
                f"Job has {images} images; at most {self.limits.max_images_per_job} are allowed.",
                "visits",
            )

    @validates_schema
    def _check_url_credentials(self, data: dict[str, Any], **_: Any) -> None:
        allowed = self.limits.allow_url_credentials
        errors: dict[str, Any] = {}
        for position, visit in enumerate(data.get("visits", [])):
            refused = credentials_refusals(visit["image_url"], allowed=allowed)
            if refused:
                errors[str(position)] = {
                    "image_url": {index: [reason] for index, reason in refused.items()}
                }
        if errors:
            raise ValidationError({"visits": errors})

    @validates_schema
    def _check_callback_url(self, data: dict[str, Any], **_: Any) -> None:
        url = data.get("callback_url")
        if url is None:
            return
        if not self.webhooks:
            raise ValidationError(WEBHOOKS_OFF, "callback_url")
        if len(url) > self.limits.max_url_length:
            raise ValidationError(
                f"Longer than {self.limits.max_url_length} characters.", "callback_url"
            )
        refused = credentials_refusal(url, allowed=self.limits.allow_url_credentials)
        if refused:
            raise ValidationError(refused, "callback_url")

    @post_load
    def _make_submission(self, data: dict[str, Any], **_: Any) -> Submission:
        visits = tuple(_visit(visit) for visit in data["visits"])
        return Submission(visits, data.get("callback_url"))


def _visit(data: dict[str, Any]) -> Visit:
    # Passwords in URLs are masked for everything that shows them; only the
    # download gets the URLs as given.
    shown, fetched = masked_urls(data["image_url"])
    return Visit(
        store_id=data["store_id"],
        visit_time=normalise_visit_time(data["visit_time"]),
        image_urls=shown,
        fetch_urls=fetched,
    )


class PageQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))
    limit = fields.Integer(validate=validate.Range(min=1))
    # Only failed images, from image ``offset`` on (read through an index of failed images).
    failed = fields.Boolean(load_default=False)


# The assignment's three, and "cancelled" (POST /api/jobs/<id>/cancel).
JOB_STATUSES = [status.value for status in JobStatus]
IMAGE_STATES = [state.value for state in ImageState]


class JobCreatedSchema(Schema):
    job_id = fields.Integer(required=True)


class StoreErrorSchema(Schema):
    store_id = fields.String(required=True)
    error = fields.String(required=True)


class StatusSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    job_id = fields.Integer(required=True)
    error = fields.List(fields.Nested(StoreErrorSchema))


class ProgressSchema(Schema):
    total = fields.Integer(required=True)
    done = fields.Integer(required=True)
    failed = fields.Integer(required=True)


class WebhookBodySchema(Schema):
    """What a completion webhook posts: the /api/status body, ``finished_at`` and ``progress``.

    Built by ``service.jobs.deliveries.delivery_body`` in the store's transaction; this
    schema documents it (OpenAPI callbacks) and checks it in tests.
    """

    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    job_id = fields.Integer(required=True)
    error = fields.List(
        fields.Nested(StoreErrorSchema),
        metadata={"description": "The failed stores, at most the first 100; absent when none."},
    )
    error_count = fields.Integer(
        required=True, metadata={"description": "How many stores failed in all."}
    )
    finished_at = fields.DateTime(required=True)
    progress = fields.Nested(ProgressSchema, required=True)


class RetryAcceptedSchema(Schema):
    """A failed job back at work: how many of its images go again."""

    job_id = fields.Integer(required=True)
    queued = fields.Integer(required=True)


class ImageResultSchema(Schema):
    store_id = fields.String(required=True)
    store_name = fields.String(allow_none=True)
    area_code = fields.String(allow_none=True)
    visit_time = fields.String(required=True)
    url = fields.String(required=True)
    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    perimeter = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    # pending, measured, failed, or cancelled (its job was cancelled before it started).
    state = fields.String(validate=validate.OneOf(IMAGE_STATES))
    # Its position among the job's images, in submission order (from 0).
    index = fields.Integer()


DELIVERY_STATES = [state.value for state in DeliveryState]


class DeliverySchema(Schema):
    """A job's latest webhook delivery (its latest run's)."""

    id = fields.String(
        required=True, metadata={"description": "The Retail-Pulse-Delivery header it is sent with."}
    )
    state = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATES))
    attempts = fields.Integer(required=True)
    last_error = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Why the last attempt failed, or null."},
    )


class JobDetailSchema(Schema):
    job_id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    created_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(allow_none=True)
    progress = fields.Nested(ProgressSchema, required=True)
    error = fields.List(fields.Nested(StoreErrorSchema))
    offset = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    # The offset of the next page (with failed=true, the index of the next failed image);
    # null when this page is the last.
    next_offset = fields.Integer(required=True, allow_none=True)
    results = fields.List(fields.Nested(ImageResultSchema), required=True)
    # null for a job submitted without callback_url.
    delivery = fields.Nested(DeliverySchema, allow_none=True)


RESULT_FORMATS = ["json", "csv"]


class JobListQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    limit = fields.Integer(validate=validate.Range(min=1))
    # The cursor: only jobs with ids below it (the previous page's next_before).
    before = fields.Integer(validate=validate.Range(min=1, max=MAX_OFFSET))


class JobListItemSchema(Schema):
    job_id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    created_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(allow_none=True, required=True)
    progress = fields.Nested(ProgressSchema, required=True)


class JobListSchema(Schema):
    """Recent jobs, newest first."""

    jobs = fields.List(fields.Nested(JobListItemSchema), required=True)
    # What to pass as ``before`` for the next (older) page; null on the last page.
    next_before = fields.Integer(required=True, allow_none=True)


class ResultsQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    format = fields.String(load_default="json", validate=validate.OneOf(RESULT_FORMATS))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))
    limit = fields.Integer(validate=validate.Range(min=1))


class ResultsPageSchema(Schema):
    """One page of a job's per-image results, in submission order."""

    job_id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    total = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    results = fields.List(fields.Nested(ImageResultSchema), required=True)


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ready", "unavailable"]))
    reason = fields.String()
    # Where jobs live; the memory store says that a restart loses them.
    store = fields.String()


class ReplicaSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    host = fields.String(required=True)
    pid = fields.Integer(required=True)
    started_at = fields.DateTime(required=True)
    heartbeat_at = fields.DateTime(required=True)
    silent_for = fields.Float(required=True)


class ReplicaListSchema(Schema):
    """The processes serving the job store; one, unless it is PostgreSQL."""

    replicas = fields.List(fields.Nested(ReplicaSchema), required=True)


class StatsSchema(Schema):
    """The service's figures for the dashboard: every live replica's on a shared store."""

    # This replica's readiness, as /readyz; `reason` says why not.
    ready = fields.Boolean(required=True)
    reason = fields.String()
    # [end of a 5-second bucket in Unix seconds, images settled per second in it], oldest
    # first: the last five minutes.
    images_per_second = fields.List(
        fields.List(fields.Float(), validate=validate.Length(equal=2)), required=True
    )
    in_flight = fields.Integer(required=True)
    queued = fields.Integer(required=True)
    pending = fields.Integer(required=True)
    # Failed images in the last five minutes, by kind (fetch, http_status, timeout, ...).
    failures_by_kind = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    replicas = fields.Integer(required=True)


class AuthSchema(Schema):
    """Whether the API needs a key: what a page asks before its first data call."""

    key_required = fields.Boolean(required=True)
    # Only when the request carried a key: whether it is the right one.
    key_valid = fields.Boolean()


class EmptySchema(Schema):
    """``{}``: the assignment's answer to a bad or unknown job id on /api/status."""

    class Meta:
        unknown = RAISE


class ErrorSchema(Schema):
    error = fields.String(required=True)
    details = fields.Raw()


class HealthSchema(Schema):
    status = fields.String(required=True)


def flatten_messages(messages: Any, prefix: str = "") -> list[str]:
    """Turn marshmallow's nested messages into ``visits[0].image_url[1]: Not a valid URL.``."""
    if isinstance(messages, dict):
        lines: list[str] = []
        for key, value in messages.items():
            if key == "_schema":
                path = prefix
            elif isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            lines.extend(flatten_messages(value, path))
        return lines
    if isinstance(messages, list | tuple):
        lines = []
        for item in messages:
            lines.extend(flatten_messages(item, prefix))
        return lines
    text = str(messages)
    return [f"{prefix}: {text}" if prefix else text]


# Ids count up from 1; no real id is longer, and int() refuses 4,300+ digits anyway.
_MAX_JOB_ID_DIGITS = 18


def parse_job_id(raw: str | None) -> int | None:
    """A positive decimal job id, or None (ASCII digits only: ``int()`` takes '٣')."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_JOB_ID_DIGITS:
        return None
    job_id = int(raw)
    return job_id if job_id > 0 else None
