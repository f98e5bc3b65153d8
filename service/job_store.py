"""Where jobs live: the storage interface the job manager talks to, and its in-memory form.

Only the job manager calls a ``JobStore``. A shared store (Redis, Postgres)
can replace ``InMemoryJobStore`` without touching handlers or the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from service.jobs import ImageOutcome, ImageRow, Job, JobStatus, JobSummary, Visit
from service.stores import Store

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

    def discard(self, job_id: int) -> None: ...


class InMemoryJobStore:
    """Jobs in a dict, ids counting up from 1."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._last_id = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def create(self, visits: tuple[Visit, ...], stores: tuple[Store | None, ...]) -> Job:
        self._last_id += 1
        job = Job.create(self._last_id, visits, stores)
        self._jobs[job.job_id] = job
        return job

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

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
        job.finish(at)
        return job.status

    def summary(self, job_id: int) -> JobSummary | None:
        job = self._jobs.get(job_id)
        return job.summary() if job else None

    def rows(self, job_id: int, offset: int, limit: int) -> list[ImageRow] | None:
        job = self._jobs.get(job_id)
        return job.rows(offset, limit) if job else None

    def recent(self, limit: int, status: JobStatus | None = None) -> list[JobSummary]:
        found: list[JobSummary] = []
        # Dicts keep insertion order and ids only grow, so reversed() is newest first.
        for job in reversed(self._jobs.values()):
            if status is None or job.status is status:
                found.append(job.summary())
                if len(found) >= limit:
                    break
        return found

    def discard(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)
