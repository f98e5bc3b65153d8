"""Completion webhook deliveries as the stores keep them: states, records and the body.

A job with a ``callback_url`` gets one delivery each time it reaches a terminal
status (a retry that finishes it again makes another, with a new id). The store
creates it in the transaction that ends the job, so a crash cannot lose it; the
webhook worker (``service.jobs.webhooks``) takes it from there.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.jobs.model import JobSummary

__all__ = [
    "MAX_BODY_ERRORS",
    "Delivery",
    "DeliveryOutcome",
    "DeliveryState",
    "DeliveryView",
    "delivery_body",
    "new_delivery_id",
]

# A job with 100,000 failed stores must not post megabytes: its body names the first
# stores only, and says how many there are in all.
MAX_BODY_ERRORS = 100


class DeliveryState(StrEnum):
    """Lower-case members are the wire values."""

    PENDING = "pending"
    DELIVERED = "delivered"
    GIVEN_UP = "given_up"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery taken for an attempt: where to, what, and how many attempts so far."""

    id: str
    job_id: int
    url: str  # as given (credentials included, when allowed): shown only masked
    body: str
    attempts: int


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one attempt changed. ``retry_in`` is set when the delivery stays pending."""

    id: str
    # The attempts before this one: the outcome is written only if no other process has
    # written one for the same attempt since (a lease taken over).
    previous_attempts: int
    state: DeliveryState
    error: str | None
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """A job's latest delivery as /api/jobs/<id> shows it."""

    id: str
    state: DeliveryState
    attempts: int
    last_error: str | None


def new_delivery_id() -> str:
    """Random, so ids never collide across replicas and never repeat after a retry."""
    return uuid.uuid4().hex


def delivery_body(summary: JobSummary) -> str:
    """The JSON posted for a job that ended: the /api/status body, ``finished_at`` and
    ``progress``; the error list cut to ``MAX_BODY_ERRORS`` with ``error_count``."""
    body: dict[str, Any] = {"status": summary.status.value, "job_id": summary.job_id}
    if summary.errors:
        body["error"] = [
            {"store_id": error.store_id, "error": error.error}
            for error in summary.errors[:MAX_BODY_ERRORS]
        ]
    body["error_count"] = len(summary.errors)
    body["finished_at"] = summary.finished_at.isoformat() if summary.finished_at else None
    body["progress"] = {"total": summary.total, "done": summary.done, "failed": summary.failed}
    return json.dumps(body, separators=(",", ":"))
