"""What the job manager reports about jobs, turned into metrics and log lines."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from service.jobs.model import JobSummary
from service.jobs.stats import ThroughputMeter
from service.jobs.store import CreatedJob
from service.metrics import Metrics, failure_label
from service.outcomes import UNKNOWN_STORE_REASON, FailureKind
from service.pipeline.flow import SettledImage
from service.url_credentials import mask_credentials

__all__ = ["JobTelemetry"]

log = logging.getLogger("service.images")


class JobTelemetry:
    """A ``JobObserver``: counts jobs and images (and, given a meter, images per 5 seconds for
    the dashboard), and logs every failed image.

    It runs inside the job manager actor, so it only does cheap, synchronous work:
    counters are bumped once per recorded batch, not once per image.
    """

    def __init__(self, metrics: Metrics, meter: ThroughputMeter | None = None) -> None:
        self._metrics = metrics
        self._meter = meter

    def job_created(self, created: CreatedJob) -> None:
        self._metrics.jobs_submitted.inc()
        # An unknown store's images fail as the job is created, never fetched: one
        # line per store, not per image.
        for store_id, images in created.unknown_stores.items():
            log.info(
                "images of an unknown store failed",
                extra={
                    "job_id": created.job_id,
                    "store_id": store_id,
                    "images": images,
                    "reason": UNKNOWN_STORE_REASON,
                    "kind": FailureKind.UNKNOWN_STORE.value,
                },
            )
        failed = sum(created.unknown_stores.values())
        if failed:
            label = failure_label(FailureKind.UNKNOWN_STORE, UNKNOWN_STORE_REASON)
            self._metrics.images_processed.labels("failed").inc(failed)
            self._metrics.image_failures.labels(label).inc(failed)
            if self._meter is not None:
                # Failures, but never processed: they stay out of images per second.
                self._meter.record(0, {FailureKind.UNKNOWN_STORE.value: failed})

    def images_recorded(self, recorded: Sequence[SettledImage]) -> None:
        measured = 0
        failures: dict[str, int] = {}
        kinds: dict[str, int] = {}
        for task, outcome in recorded:
            if outcome.error is None:
                measured += 1
                continue
            kind = outcome.kind or FailureKind.INTERNAL
            label = failure_label(kind, outcome.error)
            failures[label] = failures.get(label, 0) + 1
            kinds[kind.value] = kinds.get(kind.value, 0) + 1
            log.info(
                "image failed",
                extra={
                    "job_id": task.job_id,
                    "store_id": task.store_id,
                    "url": mask_credentials(task.url),
                    "reason": outcome.error,
                    "kind": kind.value,
                },
            )
        if measured:
            self._metrics.images_processed.labels("measured").inc(measured)
        failed = sum(failures.values())
        if failed:
            self._metrics.images_processed.labels("failed").inc(failed)
        for label, count in failures.items():
            self._metrics.image_failures.labels(label).inc(count)
        if self._meter is not None:
            self._meter.record(len(recorded), kinds)

    def job_finished(self, summary: JobSummary) -> None:
        self._metrics.jobs_finished.labels(summary.status.value).inc()
        if summary.finished_at is not None:
            duration = (summary.finished_at - summary.created_at).total_seconds()
            self._metrics.job_duration_seconds.observe(duration)
