"""The memory job store: jobs in a dict, gone with the process. For tests and benchmarks.

Ids count up from 1 on every start, and a restart loses every job: it says so
in ``/readyz`` and at start. Finished jobs are kept for a time-to-live and up to
a count; an evicted job is simply absent, so it answers like one never issued.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from service.errors import IdempotencyMismatch, JobConflict, JobNotFound, Overloaded
from service.jobs.deliveries import (
    Delivery,
    DeliveryOutcome,
    DeliveryState,
    DeliveryView,
    delivery_body,
    new_delivery_id,
)
from service.jobs.model import ImageRow, Job, JobStatus, JobSummary, Visit, estimated_bytes
from service.jobs.store import (
    CreatedJob,
    IdempotencyKey,
    Recorded,
    Reopened,
    ReplicaRecord,
    UnfinishedJob,
    this_replica,
)
from service.outcomes import RETRYABLE_FAILURES
from service.pipeline.flow import SettledImage
from service.replica import Replica
from service.store_master import Store

__all__ = ["MemoryJobStore", "check_retryable", "idempotency_mismatch", "overloaded"]


def idempotency_mismatch(key: str) -> IdempotencyMismatch:
    return IdempotencyMismatch(
        "Idempotency-Key was already used with a different request body; "
        "use a new key for a different job"
    )


def check_retryable(status: JobStatus) -> None:
    """Only a failed job can be retried."""
    if status is not JobStatus.FAILED:
        raise JobConflict(f"job is {status.value}; only a failed job can be retried")


def overloaded(pending: int, adds: int, limit: int) -> Overloaded:
    """The refusal of a job that would take pending images past ``limit`` (``adds`` 0:
    refused before its size is known)."""
    job = f", this job adds {adds}" if adds else ""
    return Overloaded(
        f"service is busy: {pending} images pending{job}, the limit is {limit}; retry later"
    )


@dataclass(slots=True)
class _Delivery:
    job_id: int
    url: str
    body: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    leased_until: float = 0.0


class MemoryJobStore:
    durable = False
    shared = False
    # Finished jobs past the count are evicted as they finish.
    needs_sweep = False
    description = "memory (nothing survives a restart)"

    def __init__(
        self,
        *,
        ttl: float = math.inf,
        max_finished: int | None = None,
        finished_bytes: int | None = None,
        idempotency_ttl: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
        replica: Replica | None = None,
    ) -> None:
        self._idempotency_ttl = idempotency_ttl
        # Idempotency-Key -> (body hash, job id, when it was recorded).
        self._keys: dict[str, tuple[str, int, float]] = {}
        self._replica = replica or Replica()
        # Finished jobs stay whole in memory: bounded by their estimated bytes too.
        self._max_finished_bytes = finished_bytes
        self._sizes: dict[int, int] = {}
        self._finished_bytes = 0
        self._jobs: dict[int, Job] = {}
        self._last_id = 0
        self._pending = 0
        self._ttl = ttl
        self._max_finished = max_finished
        # A monotonic clock: a wall-clock jump must not evict (or keep) everything.
        self._clock = clock
        # job id -> expiry, in finishing order. The TTL is fixed and the clock only
        # moves forward, so the first entry is always the next to expire.
        self._expiries: OrderedDict[int, float] = OrderedDict()
        # Webhook deliveries by id; each job's, oldest first; the pending ones.
        self._deliveries: dict[str, _Delivery] = {}
        self._job_deliveries: dict[int, list[str]] = {}
        self._due: dict[str, _Delivery] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def migrate(self) -> int:
        return 0  # nothing to migrate

    async def problem(self) -> str | None:
        return None

    def pending_images(self) -> int:
        return self._pending

    async def create(
        self,
        visits: Sequence[Visit],
        stores: Sequence[Store | None],
        *,
        max_pending: int,
        idempotency: IdempotencyKey | None = None,
        callback_url: str | None = None,
    ) -> CreatedJob:
        if idempotency is not None:
            replay = self._replay(idempotency)
            if replay is not None:
                return replay
        images = sum(len(visit.image_urls) for visit in visits)
        if self._pending + images > max_pending:
            raise overloaded(self._pending, images, max_pending)
        self._last_id += 1
        job = Job.create(self._last_id, tuple(visits), tuple(stores))
        job.callback_url = callback_url
        self._jobs[job.job_id] = job
        self._sizes[job.job_id] = estimated_bytes(visits)
        self._pending += job.total - job.done
        if idempotency is not None:
            self._keys[idempotency.key] = (idempotency.body_hash, job.job_id, self._clock())
        finished = self._finish(job) if job.all_settled else None
        return CreatedJob(job.job_id, job.total, job.unknown_store_images(), finished)

    def _replay(self, idempotency: IdempotencyKey) -> CreatedJob | None:
        found = self._keys.get(idempotency.key)
        if found is None or found[2] + self._idempotency_ttl <= self._clock():
            return None
        body_hash, job_id, _ = found
        if body_hash != idempotency.body_hash:
            raise idempotency_mismatch(idempotency.key)
        job = self._jobs.get(job_id)
        return CreatedJob(job_id, job.total if job else 0, {}, replayed=True)

    async def record(self, settled: Sequence[SettledImage]) -> Recorded:
        recorded = Recorded()
        touched: dict[int, Job] = {}
        for image in settled:
            job = self._jobs.get(image.task.job_id)
            if job is None:
                continue
            ongoing = job.status is JobStatus.ONGOING
            if job.record(image.task.index, image.outcome, image.task.epoch):
                recorded.accepted.append(image)
                touched[job.job_id] = job
                if ongoing:  # a cancelled job's images stopped counting as pending
                    self._pending -= 1
        for job in touched.values():
            if job.status is JobStatus.ONGOING and job.all_settled:
                recorded.finished.append(self._finish(job))
        return recorded

    async def cancel(self, job_id: int) -> JobSummary:
        job = self._get(job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        if not job.cancel(datetime.now(UTC)):
            raise JobConflict(f"job already {job.status.value}")
        self._pending -= job.total - job.done
        self._expire_later(job)
        summary = job.summary()
        self._add_delivery(job, summary)
        return summary

    async def retry(self, job_id: int, *, max_pending: int) -> Reopened:
        job = self._get(job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        check_retryable(job.status)
        count = sum(
            1
            for outcome in job.outcomes
            if outcome is not None and outcome.kind in RETRYABLE_FAILURES
        )
        if not count:
            raise JobConflict("nothing to retry")
        if self._pending + count > max_pending:
            raise overloaded(self._pending, count, max_pending)
        job.reopen(RETRYABLE_FAILURES)
        self._pending += count
        if self._expiries.pop(job_id, None) is not None:
            self._finished_bytes -= self._sizes.get(job_id, 0)
        return Reopened(job_id, count, list(job.pending_images()))

    def _finish(self, job: Job) -> JobSummary:
        job.finish(datetime.now(UTC))
        self._expire_later(job)
        summary = job.summary()
        self._add_delivery(job, summary)
        return summary

    def _add_delivery(self, job: Job, summary: JobSummary) -> None:
        """A job that ended: its webhook delivery, if it has a callback URL."""
        if job.callback_url is None:
            return
        delivery_id = new_delivery_id()
        delivery = _Delivery(job.job_id, job.callback_url, delivery_body(summary))
        delivery.next_attempt_at = self._clock()
        self._deliveries[delivery_id] = self._due[delivery_id] = delivery
        self._job_deliveries.setdefault(job.job_id, []).append(delivery_id)

    def _expire_later(self, job: Job) -> None:
        """A job that ended: kept for the time-to-live, within the count and the bytes."""
        self._expiries[job.job_id] = self._clock() + self._ttl
        self._finished_bytes += self._sizes.get(job.job_id, 0)
        while self._expiries and (
            (self._max_finished is not None and len(self._expiries) > self._max_finished)
            or (
                self._max_finished_bytes is not None
                and self._finished_bytes > self._max_finished_bytes
            )
        ):
            oldest = next(iter(self._expiries))
            self._forget(oldest)

    async def unfinished(self) -> list[UnfinishedJob]:
        # O(jobs): called at start (nothing to find) and at shutdown.
        return [
            UnfinishedJob(job.job_id, list(job.pending_images()))
            for job in self._jobs.values()
            if not job.status.is_terminal
        ]

    def _get(self, job_id: int) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        expiry = self._expiries.get(job_id)
        # Checked on every read, so an expired job is gone even between sweeps.
        if expiry is not None and expiry <= self._clock():
            self._forget(job_id)
            return None
        return job

    async def summary(self, job_id: int) -> JobSummary | None:
        job = self._get(job_id)
        return job.summary() if job else None

    async def summaries(self, job_ids: Sequence[int]) -> list[JobSummary]:
        jobs = (self._get(job_id) for job_id in job_ids)
        return [job.summary() for job in jobs if job is not None]

    async def rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        job = self._get(job_id)
        return (job.summary(), job.rows(offset, limit)) if job else None

    async def failed_rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        job = self._get(job_id)
        return (job.summary(), job.failed_rows(offset, limit)) if job else None

    async def recent(
        self, limit: int, status: JobStatus | None = None, before: int | None = None
    ) -> list[JobSummary]:
        await self.sweep()
        found: list[JobSummary] = []
        # Dicts keep insertion order and ids only grow, so reversed() is newest first.
        for job in reversed(self._jobs.values()):
            if before is not None and job.job_id >= before:
                continue
            if status is None or job.status is status:
                found.append(job.summary())
                if len(found) >= limit:
                    break
        return found

    def _forget(self, job_id: int) -> None:
        for delivery_id in self._job_deliveries.pop(job_id, ()):
            self._deliveries.pop(delivery_id, None)
            self._due.pop(delivery_id, None)
        self._jobs.pop(job_id, None)
        size = self._sizes.pop(job_id, 0)
        if self._expiries.pop(job_id, None) is not None:
            self._finished_bytes -= size

    async def sweep(self) -> int:
        now = self._clock()
        for key, (_, _, created) in list(self._keys.items()):
            if created + self._idempotency_ttl <= now:
                del self._keys[key]
        evicted = 0
        while self._expiries:
            job_id, expiry = next(iter(self._expiries.items()))
            if expiry > now:
                break
            self._forget(job_id)
            evicted += 1
        return evicted

    async def replicas(self) -> list[ReplicaRecord]:
        return [this_replica(self._replica)]

    async def take_deliveries(self, limit: int, lease: float) -> list[Delivery]:
        now = self._clock()
        due = sorted(
            (
                (delivery.next_attempt_at, delivery_id)
                for delivery_id, delivery in self._due.items()
                if delivery.next_attempt_at <= now and delivery.leased_until <= now
            )
        )[:limit]
        taken: list[Delivery] = []
        for _, delivery_id in due:
            delivery = self._due[delivery_id]
            delivery.leased_until = now + lease
            taken.append(
                Delivery(
                    delivery_id, delivery.job_id, delivery.url, delivery.body, delivery.attempts
                )
            )
        return taken

    async def settle_delivery(self, outcome: DeliveryOutcome) -> bool:
        delivery = self._due.get(outcome.id)
        if delivery is None or delivery.attempts != outcome.previous_attempts:
            return False
        delivery.attempts += 1
        delivery.state = outcome.state
        delivery.last_error = outcome.error
        delivery.leased_until = 0.0
        if outcome.state is DeliveryState.PENDING:
            delivery.next_attempt_at = self._clock() + (outcome.retry_in or 0.0)
        else:
            del self._due[outcome.id]
        return True

    async def latest_delivery(self, job_id: int) -> DeliveryView | None:
        ids = self._job_deliveries.get(job_id)
        if not ids:
            return None
        delivery = self._deliveries[ids[-1]]
        return DeliveryView(ids[-1], delivery.state, delivery.attempts, delivery.last_error)
