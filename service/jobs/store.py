"""Where jobs live: the storage interface the job manager talks to, and its in-memory form.

Only the job manager calls a ``JobStore``. A shared store (Redis, Postgres)
can replace ``InMemoryJobStore`` without touching handlers or the pipeline.
Finished jobs are kept for a time-to-live and up to a count; an evicted job is
simply absent, so it answers exactly like one that never existed.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

from service.jobs.model import ImageRow, Job, JobStatus, JobSummary, Visit
from service.outcomes import ImageOutcome
from service.store_master import Store

__all__ = ["InMemoryJobStore", "JobStore"]


class JobStore(Protocol):
    def create(self, visits: tuple[Visit, ...], stores: tuple[Store | None, ...]) -> Job:
        """Allocate the next job id and keep the new, ongoing job."""

    def get(self, job_id: int) -> Job | None: ...

    def record(self, job_id: int, settled: Sequence[tuple[int, ImageOutcome]]) -> Job | None:
        """Store settled images; returns the job, or None when it is gone."""

    def finish(self, job_id: int, at: datetime) -> JobStatus | None:
        """Move the job to its terminal status, once; returns that status."""

    def summary(self, job_id: int) -> JobSummary | None: ...

    def rows(self, job_id: int, offset: int, limit: int) -> list[ImageRow] | None: ...

    def recent(self, limit: int, status: JobStatus | None = None) -> list[JobSummary]: ...

    def ongoing(self) -> Iterator[Job]:
        """Every job that has not finished yet."""

    def sweep(self) -> int:
        """Forget finished jobs past their time-to-live; returns how many."""


class InMemoryJobStore:
    """Jobs in a dict, ids counting up from 1, finished ones evicted by age and count."""

    def __init__(
        self,
        *,
        ttl: float = math.inf,
        max_finished: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jobs: dict[int, Job] = {}
        self._last_id = 0
        self._ttl = ttl
        self._max_finished = max_finished
        # A monotonic clock: a wall-clock jump must not evict (or keep) everything.
        self._clock = clock
        # job id -> expiry, in finishing order. The TTL is fixed and the clock only
        # moves forward, so the first entry is always the next to expire.
        self._expiries: OrderedDict[int, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def finished_count(self) -> int:
        return len(self._expiries)

    def create(self, visits: tuple[Visit, ...], stores: tuple[Store | None, ...]) -> Job:
        self._last_id += 1
        job = Job.create(self._last_id, visits, stores)
        self._jobs[job.job_id] = job
        return job

    def get(self, job_id: int) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        expiry = self._expiries.get(job_id)
        # Checked on every read, so an expired job is gone even between sweeps.
        if expiry is not None and expiry <= self._clock():
            self._forget(job_id)
            return None
        return job

    def record(self, job_id: int, settled: Sequence[tuple[int, ImageOutcome]]) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None:
            for index, outcome in settled:
                job.record(index, outcome)
        return job

    def finish(self, job_id: int, at: datetime) -> JobStatus | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if not job.status.is_terminal:
            job.finish(at)
            self._expiries[job_id] = self._clock() + self._ttl
            if self._max_finished is not None:
                while len(self._expiries) > self._max_finished:
                    oldest, _ = self._expiries.popitem(last=False)
                    self._jobs.pop(oldest, None)
        return job.status

    def summary(self, job_id: int) -> JobSummary | None:
        job = self.get(job_id)
        return job.summary() if job else None

    def rows(self, job_id: int, offset: int, limit: int) -> list[ImageRow] | None:
        job = self.get(job_id)
        return job.rows(offset, limit) if job else None

    def recent(self, limit: int, status: JobStatus | None = None) -> list[JobSummary]:
        self.sweep()
        found: list[JobSummary] = []
        # Dicts keep insertion order and ids only grow, so reversed() is newest first.
        for job in reversed(self._jobs.values()):
            if status is None or job.status is status:
                found.append(job.summary())
                if len(found) >= limit:
                    break
        return found

    def _forget(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)
        self._expiries.pop(job_id, None)

    def ongoing(self) -> Iterator[Job]:
        # O(jobs), and only called at shutdown.
        return (job for job in list(self._jobs.values()) if not job.status.is_terminal)

    def sweep(self) -> int:
        now = self._clock()
        evicted = 0
        while self._expiries:
            job_id, expiry = next(iter(self._expiries.items()))
            if expiry > now:
                break
            self._forget(job_id)
            evicted += 1
        return evicted
