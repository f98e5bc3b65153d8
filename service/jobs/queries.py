"""The SQL both database stores share, written once with ``?`` placeholders, and the row
converters. PostgreSQL numbers its placeholders: ``numbered`` rewrites them."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from service.jobs.model import ImageRow, JobStatus, JobSummary, StoreError, image_state

__all__ = [
    "CANCELLED",
    "CLAIMED",
    "FAILED_ROWS",
    "JOB_ERRORS",
    "JOB_SUMMARY",
    "LATEST_DELIVERY",
    "LIST_COLUMNS",
    "QUEUED",
    "RESULT_ROWS",
    "SETTLED",
    "SUMMARY_COLUMNS",
    "UPSERT_STORE_FAILURE",
    "errors_json",
    "image_row",
    "moment",
    "numbered",
    "summary",
]

# An image's state: waiting, claimed by a replica (shared store), settled, or cancelled
# before it started (a result from one that was in flight is still recorded).
QUEUED, CLAIMED, SETTLED, CANCELLED = 0, 1, 2, 3

SUMMARY_COLUMNS = "id, status, created_at, finished_at, total, done, failed, errors, epoch"
# The same without the error list, for lists of jobs.
LIST_COLUMNS = "id, status, created_at, finished_at, total, done, failed, NULL, epoch"

JOB_SUMMARY = f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE id = ?"

_RESULT_COLUMNS = (
    "SELECT v.store_id, v.store_name, v.area_code, v.visit_time, i.url, "
    "i.width, i.height, i.error, i.idx FROM images i "
    "JOIN visits v ON v.job_id = i.job_id AND v.position = i.visit "
)
# One page of results: a range of the images' primary key, never an OFFSET scan.
RESULT_ROWS = f"{_RESULT_COLUMNS}WHERE i.job_id = ? AND i.idx >= ? ORDER BY i.idx LIMIT ?"
# A page of failed images only: a range of the partial index images_failed (job_id, idx)
# WHERE error IS NOT NULL, so a page costs its rows however few of the job's images failed.
FAILED_ROWS = (
    f"{_RESULT_COLUMNS}WHERE i.job_id = ? AND i.idx >= ? AND i.error IS NOT NULL "
    "ORDER BY i.idx LIMIT ?"
)

# Records a store's failure: the error names its first failing image in submission
# order, whatever order the downloads finished in. (Both dialects take it as is.)
UPSERT_STORE_FAILURE = (
    "INSERT INTO store_failures (job_id, store_id, store_rank, first_index, reason, "
    "images, unknown_store) VALUES (?, ?, ?, ?, ?, 1, ?) "
    "ON CONFLICT (job_id, store_id) DO UPDATE SET images = store_failures.images + 1, "
    "reason = CASE WHEN excluded.first_index < store_failures.first_index "
    "THEN excluded.reason ELSE store_failures.reason END, "
    "first_index = CASE WHEN excluded.first_index < store_failures.first_index "
    "THEN excluded.first_index ELSE store_failures.first_index END"
)

# The error list's entries, in the order of each store's first visit.
JOB_ERRORS = (
    "SELECT store_id, reason, images, unknown_store FROM store_failures "
    "WHERE job_id = ? ORDER BY store_rank"
)

# A job's delivery of its latest run (a run ends once, so it has at most one).
LATEST_DELIVERY = (
    "SELECT id, state, attempts, last_error FROM deliveries WHERE job_id = ? "
    "ORDER BY epoch DESC, created_at DESC LIMIT 1"
)

_PLACEHOLDER = re.compile(r"\?")


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (none of our SQL quotes a ``?``)."""
    count = 0

    def next_number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(next_number, sql)


def moment(seconds: float) -> datetime:
    """Unix seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def summary(row: Sequence[Any]) -> JobSummary:
    """A ``SUMMARY_COLUMNS`` row as a summary (``errors`` may be NULL: an empty list)."""
    job_id, status, created_at, finished_at, total, done, failed, errors, epoch = row
    return JobSummary(
        job_id=job_id,
        status=JobStatus(status),
        created_at=moment(created_at),
        finished_at=None if finished_at is None else moment(finished_at),
        total=total,
        done=done,
        failed=failed,
        errors=tuple(StoreError(store, message) for store, message in json.loads(errors or "[]")),
        epoch=epoch,
    )


def image_row(row: Sequence[Any], status: JobStatus) -> ImageRow:
    """A ``RESULT_ROWS`` (or ``FAILED_ROWS``) row as an image result of a job in ``status``."""
    store_id, store_name, area_code, visit_time, url, width, height, error, index = row
    return ImageRow(
        store_id=store_id,
        store_name=store_name,
        area_code=area_code,
        visit_time=visit_time,
        url=url,
        width=width,
        height=height,
        perimeter=None if width is None or height is None else 2 * (width + height),
        error=error,
        state=image_state(width, error, status),
        index=index,
    )


def errors_json(errors: Sequence[tuple[str, str]]) -> str:
    return json.dumps([list(error) for error in errors], ensure_ascii=False)
