"""Prometheus metrics: one registry per app, the instruments, and failure-reason categories."""

from __future__ import annotations

from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.outcomes import FailureKind

__all__ = [
    "CONTENT_TYPE_LATEST",
    "FAILURE_CATEGORIES",
    "WEBHOOK_OUTCOMES",
    "Metrics",
    "failure_label",
]

# The *_created series (a timestamp per counter) double the output and no dashboard
# uses them; the switch is process-wide, which is fine for a process serving one app.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

# The fixed label values of the failure counter. Reasons are free text holding
# URLs and byte counts; only these categories ever become labels, so the number
# of series stays bounded whatever the images do.
FAILURE_CATEGORIES = (
    "http_4xx",
    "http_5xx",
    "http_other",
    "timeout",
    "connection",
    "too_large",
    "too_many_scans",
    "decode_timeout",
    "redirects",
    "invalid_url",
    "not_image",
    "corrupt",
    "address_refused",
    "circuit_open",
    "unknown_store",
    "other",
)

# What one webhook attempt ended in: "retrying" failed, and the delivery is due again.
WEBHOOK_OUTCOMES = ("delivered", "retrying", "given_up")

# Failure kinds -> the failure counter's label values. The labels predate the kinds
# and operators' alerts match them, so they stay; an HTTP status splits by its class.
_KIND_LABELS: dict[FailureKind, str] = {
    FailureKind.FETCH: "connection",
    FailureKind.TIMEOUT: "timeout",
    FailureKind.TOO_LARGE: "too_large",
    FailureKind.PIXELS: "too_large",
    FailureKind.NOT_AN_IMAGE: "not_image",
    FailureKind.DECODE: "corrupt",
    FailureKind.TOO_MANY_SCANS: "too_many_scans",
    FailureKind.DECODE_TIMEOUT: "decode_timeout",
    FailureKind.REFUSED_ADDRESS: "address_refused",
    FailureKind.REDIRECT_REFUSED: "redirects",
    FailureKind.INVALID_URL: "invalid_url",
    FailureKind.CIRCUIT_OPEN: "circuit_open",
    FailureKind.UNKNOWN_STORE: "unknown_store",
    FailureKind.SHUTDOWN: "other",
    FailureKind.INTERNAL: "other",
}


def failure_label(kind: FailureKind, reason: str) -> str:
    """The failure counter's label for a failed image (one of ``FAILURE_CATEGORIES``)."""
    if kind is FailureKind.HTTP_STATUS:
        # The downloader's reasons for this kind start "HTTP <status>".
        klass = reason[5:6]
        return {"4": "http_4xx", "5": "http_5xx"}.get(klass, "http_other")
    return _KIND_LABELS.get(kind, "other")


class _ByteBudget(Protocol):
    @property
    def in_use(self) -> int: ...

    @property
    def waiting(self) -> int: ...


class _Pipeline(Protocol):
    @property
    def in_flight(self) -> int: ...

    @property
    def byte_budget(self) -> _ByteBudget: ...

    @property
    def queued_images(self) -> int: ...


class _Connections(Protocol):
    @property
    def open(self) -> int: ...


class _EventHub(Protocol):
    @property
    def open_streams(self) -> int: ...


class _JobManager(Protocol):
    @property
    def pending_images(self) -> int: ...

    @property
    def unsaved_results(self) -> int: ...


class Metrics:
    """Every instrument of the service, registered in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.jobs_submitted = Counter(
            "retail_pulse_jobs_submitted", "Jobs accepted by POST /api/submit.", registry=registry
        )
        self.jobs_finished = Counter(
            "retail_pulse_jobs_finished",
            "Jobs that reached a terminal status.",
            ["status"],
            registry=registry,
        )
        self.images_processed = Counter(
            "retail_pulse_images_processed",
            "Images settled, by outcome (measured or failed).",
            ["outcome"],
            registry=registry,
        )
        self.image_failures = Counter(
            "retail_pulse_image_failures",
            "Failed images by reason category (fetch, decode or unknown store).",
            ["reason"],
            registry=registry,
        )
        self.images_in_flight = Gauge(
            "retail_pulse_images_in_flight",
            "Images being downloaded or measured right now.",
            registry=registry,
        )
        self.images_pending = Gauge(
            "retail_pulse_images_pending",
            "Images accepted and not yet settled (what admission control counts).",
            registry=registry,
        )
        self.images_queued = Gauge(
            "retail_pulse_images_queued",
            "Images accepted but not yet started.",
            registry=registry,
        )
        self.images_unsaved = Gauge(
            "retail_pulse_images_unsaved",
            "Settled images waiting to be written because the job store refused them.",
            registry=registry,
        )
        self.image_bytes_held = Gauge(
            "retail_pulse_image_bytes_held",
            "Bytes of image data reserved in the image_bytes_budget (downloading or measuring).",
            registry=registry,
        )
        self.image_bytes_waiting = Gauge(
            "retail_pulse_image_bytes_waiting",
            "Downloads waiting for room in the image_bytes_budget before reading their body.",
            registry=registry,
        )
        self.pool_batch_size = Histogram(
            "retail_pulse_pool_batch_size",
            "Images sent to a process-pool worker in one call.",
            buckets=(1, 2, 4, 8, 16, 32, 48, 64, 128, 256),
            registry=registry,
        )
        self.download_seconds = Histogram(
            "retail_pulse_download_seconds",
            "Time of one download attempt, successful or not (retries are attempts too).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.job_duration_seconds = Histogram(
            "retail_pulse_job_duration_seconds",
            "Time from submission to terminal status.",
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400),
            registry=registry,
        )
        self.connections_open = Gauge(
            "retail_pulse_connections_open",
            "Client connections to the HTTP API open right now.",
            registry=registry,
        )
        self.connections_refused = Counter(
            "retail_pulse_connections_refused",
            "Client connections answered 503 and closed at once: max_connections were open.",
            registry=registry,
        )
        self.header_timeouts = Counter(
            "retail_pulse_header_timeouts",
            "Connections answered 408 and closed: no complete request headers within "
            "header_timeout.",
            registry=registry,
        )
        self.event_streams_open = Gauge(
            "retail_pulse_event_streams_open",
            "Live event streams (Server-Sent Events) open right now.",
            registry=registry,
        )
        self.event_streams_refused = Counter(
            "retail_pulse_event_streams_refused",
            "Event streams answered 503: max_event_streams were open.",
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "retail_pulse_webhook_attempts",
            "Webhook delivery attempts by outcome: delivered, retrying (failed, due again) "
            "or given_up.",
            ["outcome"],
            registry=registry,
        )
        self.replica_info = Gauge(
            "retail_pulse_replica_info",
            "This process among the replicas of one job store (always 1).",
            ["replica_id", "name", "host", "pid"],
            registry=registry,
        )
        # Every label value exists from the start, so a scrape shows zeros rather
        # than missing series, and rate() works from the first failure.
        for status in ("completed", "failed"):
            self.jobs_finished.labels(status)
        for outcome in ("measured", "failed"):
            self.images_processed.labels(outcome)
        for category in FAILURE_CATEGORIES:
            self.image_failures.labels(category)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_attempts.labels(outcome)

    def watch_pipeline(self, pipeline: _Pipeline) -> None:
        """Read the pipeline's gauges at scrape time instead of on every image."""
        self.images_in_flight.set_function(lambda: pipeline.in_flight)
        self.images_queued.set_function(lambda: pipeline.queued_images)
        self.image_bytes_held.set_function(lambda: pipeline.byte_budget.in_use)
        self.image_bytes_waiting.set_function(lambda: pipeline.byte_budget.waiting)

    def watch_job_manager(self, manager: _JobManager) -> None:
        self.images_pending.set_function(lambda: manager.pending_images)
        self.images_unsaved.set_function(lambda: manager.unsaved_results)

    def watch_event_hub(self, hub: _EventHub) -> None:
        self.event_streams_open.set_function(lambda: hub.open_streams)

    def watch_connections(self, connections: _Connections) -> None:
        self.connections_open.set_function(lambda: connections.open)

    def name_replica(self, replica_id: str, name: str, host: str, pid: int) -> None:
        self.replica_info.labels(replica_id, name, host, str(pid)).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
