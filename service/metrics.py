"""Prometheus metrics: one registry per app, the instruments, and failure-reason categories."""

from __future__ import annotations

import time
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

from service.jobs.model import UNKNOWN_STORE_REASON
from service.net.byte_budget import ByteBudget, ByteLease

__all__ = [
    "CONTENT_TYPE_LATEST",
    "FAILURE_CATEGORIES",
    "Metrics",
    "TimedFetcher",
    "failure_category",
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
    "redirects",
    "invalid_url",
    "not_image",
    "corrupt",
    "address_refused",
    "circuit_open",
    "unknown_store",
    "other",
)

# Checked in order; the first substring found in the lower-cased reason wins.
_REASON_MARKERS: tuple[tuple[str, str], ...] = (
    ("circuit", "circuit_open"),
    ("not allowed", "address_refused"),
    ("address refused", "address_refused"),
    ("blocked address", "address_refused"),
    ("private address", "address_refused"),
    ("timed out", "timeout"),
    ("timeout", "timeout"),
    ("too many jpeg scans", "too_many_scans"),
    ("larger than", "too_large"),
    ("too large", "too_large"),
    ("redirect", "redirects"),
    ("invalid url", "invalid_url"),
    ("unsupported url scheme", "invalid_url"),
    ("not an http", "invalid_url"),
    ("cannot resolve", "connection"),
    ("not an image", "not_image"),
    ("corrupt", "corrupt"),
    ("truncated", "corrupt"),
    ("invalid image", "corrupt"),
    ("connection", "connection"),
    ("bad response", "connection"),
)


def failure_category(reason: str) -> str:
    """Map an image's failure reason to one of ``FAILURE_CATEGORIES``."""
    if reason == UNKNOWN_STORE_REASON:
        return "unknown_store"
    if reason.startswith("HTTP "):
        code = reason[5:8]
        if code.startswith("4"):
            return "http_4xx"
        if code.startswith("5"):
            return "http_5xx"
        return "http_other"
    lowered = reason.lower()
    for marker, category in _REASON_MARKERS:
        if marker in lowered:
            return category
    return "other"


class _Pipeline(Protocol):
    in_flight: int
    byte_budget: ByteBudget

    @property
    def queued_images(self) -> int: ...


class _JobManager(Protocol):
    pending_images: int


class _Fetcher(Protocol):
    async def try_fetch(
        self, url: str, attempt: int = 1, *, lease: ByteLease | None = None
    ) -> bytes: ...


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
        # Every label value exists from the start, so a scrape shows zeros rather
        # than missing series, and rate() works from the first failure.
        for status in ("completed", "failed"):
            self.jobs_finished.labels(status)
        for outcome in ("measured", "failed"):
            self.images_processed.labels(outcome)
        for category in FAILURE_CATEGORIES:
            self.image_failures.labels(category)

    def watch_pipeline(self, pipeline: _Pipeline) -> None:
        """Read the pipeline's gauges at scrape time instead of on every image."""
        self.images_in_flight.set_function(lambda: pipeline.in_flight)
        self.images_queued.set_function(lambda: pipeline.queued_images)
        self.image_bytes_held.set_function(lambda: pipeline.byte_budget.in_use)
        self.image_bytes_waiting.set_function(lambda: pipeline.byte_budget.waiting)

    def watch_job_manager(self, manager: _JobManager) -> None:
        self.images_pending.set_function(lambda: manager.pending_images)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TimedFetcher:
    """Wraps a fetcher to observe the duration of each download attempt."""

    def __init__(self, fetcher: _Fetcher, histogram: Histogram) -> None:
        self._fetcher = fetcher
        self._histogram = histogram

    async def try_fetch(
        self, url: str, attempt: int = 1, *, lease: ByteLease | None = None
    ) -> bytes:
        started = time.perf_counter()
        try:
            return await self._fetcher.try_fetch(url, attempt, lease=lease)
        finally:
            self._histogram.observe(time.perf_counter() - started)
