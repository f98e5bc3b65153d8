"""Where jobs live: the ``JobStore`` interface the job manager writes through, and what it returns.

Three stores implement it: memory (nothing survives a restart), SQLite (one file,
one process) and PostgreSQL (any number of replicas). Every call is async and
returns plain values, never a live record: a store's answers are snapshots.

What a durable store promises:
- ``create`` commits the job, its visits, its images and the store lookups before
  it returns, so a 201 is never sent for a job a crash could lose;
- ``record`` commits a batch of outcomes (across jobs) in one transaction, counts
  each image once, and finishes every job whose last image it records, in that
  same transaction;
- a job id is never handed out twice, even once every job has been deleted;
- a job with a callback URL gets its webhook delivery in the transaction that ends it
  (``create``, ``record`` or ``cancel``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from service.jobs.deliveries import Delivery, DeliveryOutcome, DeliveryView
from service.jobs.model import ImageRow, JobStatus, JobSummary, Visit
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.replica import Replica
from service.store_master import Store

__all__ = [
    "CreatedJob",
    "IdempotencyKey",
    "JobStore",
    "Recorded",
    "Reopened",
    "ReplicaRecord",
    "StoreOpenError",
    "UnfinishedJob",
    "this_replica",
]


class StoreOpenError(Exception):
    """The store cannot be opened at start (unreachable, locked, schema too new); one line."""


@dataclass(frozen=True, slots=True)
class CreatedJob:
    """A job as ``create`` committed it."""

    job_id: int
    total: int
    # Store id -> images that failed at creation because the store is unknown.
    unknown_stores: dict[str, int]
    # Set when nothing was left to process (every store unknown): the job ended at once.
    finished: JobSummary | None = None
    # True when an Idempotency-Key named a job created before: nothing new was made.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A submit's ``Idempotency-Key`` and the hash of its body (the parsed JSON)."""

    key: str
    body_hash: str


@dataclass(frozen=True, slots=True)
class Reopened:
    """A failed job put back to ongoing by a retry: how many images go again, and (for a
    store this process alone works on) the images themselves."""

    job_id: int
    queued: int
    tasks: list[ImageTask]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one ``record`` call committed."""

    # The outcomes it recorded; repeats, and results under a stale claim, are left out.
    accepted: list[SettledImage] = field(default_factory=list)
    # Jobs whose last image it recorded, now terminal.
    finished: list[JobSummary] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UnfinishedJob:
    """An ongoing job and its images that have no outcome yet, in submission order."""

    job_id: int
    tasks: list[ImageTask]


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """A process serving the store, for operators."""

    id: str
    name: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    # Seconds since its last heartbeat (on the database's clock, for a shared store).
    silent_for: float


def this_replica(replica: Replica) -> ReplicaRecord:
    """A store only this process serves: the one replica, heard from now."""
    now = time.time()
    return ReplicaRecord(
        replica.id.hex, replica.name, replica.host, replica.pid, replica.started_at, now, 0.0
    )


class JobStore(Protocol):
    @property
    def durable(self) -> bool:
        """Whether accepted work survives a restart (not for the memory store)."""
        ...

    @property
    def description(self) -> str:
        """Where the store is, safe to show (no password)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether replicas share it, and so claim their work through it."""
        ...

    async def open(self) -> None:
        """Connect (waiting up to the connect timeout), lock if needed, migrate the schema."""

    async def close(self) -> None: ...

    async def migrate(self) -> int:
        """Only bring the schema up to date (a separate deploy step); returns its version."""

    async def problem(self) -> str | None:
        """Why the store cannot serve right now (readiness), or None."""

    def pending_images(self) -> int:
        """Images of ongoing jobs without an outcome, as this process knows them."""
        ...

    @property
    def needs_sweep(self) -> bool:
        """More finished jobs are kept than ``max_finished_jobs``: sweep now, not later."""
        ...

    async def create(
        self,
        visits: Sequence[Visit],
        stores: Sequence[Store | None],
        *,
        max_pending: int,
        idempotency: IdempotencyKey | None = None,
        callback_url: str | None = None,
    ) -> CreatedJob:
        """Commit a new job; ``Overloaded`` if it would take pending images past ``max_pending``.

        With ``idempotency``, a key seen before answers its job (``replayed``) before any
        admission check, or ``IdempotencyMismatch`` when the body differs; a new key is
        committed with the job, and only then.
        """

    async def cancel(self, job_id: int) -> JobSummary:
        """Stop an ongoing job: no image of it starts any more. ``JobNotFound``, or
        ``JobConflict`` when it has ended already."""

    async def retry(self, job_id: int, *, max_pending: int) -> Reopened:
        """Put a failed job's retryable failed images back to work, in a new run (epoch).

        ``JobConflict`` unless the job failed and has such images; ``Overloaded`` past
        ``max_pending`` like a submit.
        """

    async def record(self, settled: Sequence[SettledImage]) -> Recorded: ...

    async def unfinished(self) -> list[UnfinishedJob]:
        """Every ongoing job this process should work on, with its images still to do."""

    async def summary(self, job_id: int) -> JobSummary | None: ...

    async def summaries(self, job_ids: Sequence[int]) -> list[JobSummary]:
        """The summaries of those of ``job_ids`` that exist, in any order, in one read (live
        events watch many jobs at once)."""

    async def rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        """A page of a job's results in submission order, from image ``offset``."""

    async def failed_rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        """Up to ``limit`` of a job's failed images from image ``offset`` on, in submission
        order; a database reads them through its index of failed images, not by a scan."""

    async def recent(
        self, limit: int, status: JobStatus | None = None, before: int | None = None
    ) -> list[JobSummary]:
        """Jobs newest first, optionally of one status, with ids below ``before``."""

    async def sweep(self) -> int:
        """Delete finished jobs past their time-to-live or beyond the count; returns how many."""

    async def replicas(self) -> list[ReplicaRecord]:
        """The processes serving this store, oldest first."""

    async def take_deliveries(self, limit: int, lease: float) -> list[Delivery]:
        """Up to ``limit`` pending webhook deliveries that are due and not under a live
        lease, leased to this process for ``lease`` seconds (oldest due first)."""

    async def settle_delivery(self, outcome: DeliveryOutcome) -> bool:
        """Write an attempt's outcome and end the lease; False when another process wrote
        one for that attempt first (its lease had run out), or the delivery is gone."""

    async def latest_delivery(self, job_id: int) -> DeliveryView | None:
        """The delivery of the job's latest run, or None (no callback URL)."""
