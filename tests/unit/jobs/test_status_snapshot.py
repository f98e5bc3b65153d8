"""StatusSnapshot: status polls of ongoing jobs share one read per interval; ends are read fresh."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import cast

import pytest

from service.jobs.model import JobStatus, JobSummary
from service.jobs.status_snapshot import WATCH_SECONDS, StatusSnapshot
from service.jobs.store import JobStore

REFRESH = 0.125  # exact in binary, so clock sums compare exactly


def job(job_id: int, status: JobStatus = JobStatus.ONGOING, done: int = 0) -> JobSummary:
    return JobSummary(
        job_id=job_id,
        status=status,
        created_at=datetime(2026, 12, 6, tzinfo=UTC),
        finished_at=None,
        total=10,
        done=done,
        failed=0,
        errors=(),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """The two reads the snapshot makes, answered from a dict, counted; ``hold`` stalls
    the next ``summaries`` until released."""

    def __init__(self, *jobs: JobSummary) -> None:
        self.jobs = {summary.job_id: summary for summary in jobs}
        self.single_reads = 0
        self.batch_reads: list[list[int]] = []
        self.hold: asyncio.Event | None = None
        self.read_twice = asyncio.Event()

    async def summary(self, job_id: int) -> JobSummary | None:
        self.single_reads += 1
        return self.jobs.get(job_id)

    async def summaries(self, job_ids: Sequence[int]) -> list[JobSummary]:
        self.batch_reads.append(list(job_ids))
        if len(self.batch_reads) >= 2:
            self.read_twice.set()
        answer = [self.jobs[job_id] for job_id in job_ids if job_id in self.jobs]
        if self.hold is not None:
            await self.hold.wait()
        return answer


def snapshot_of(store: CountingStore, clock: Clock) -> StatusSnapshot:
    return StatusSnapshot(cast(JobStore, store), REFRESH, clock=clock)


async def test_polls_of_an_ongoing_job_share_the_periodic_read() -> None:
    store, clock = CountingStore(job(1), job(2)), Clock()
    snapshot = snapshot_of(store, clock)
    assert (await snapshot.summary(1)) == job(1)
    assert (await snapshot.summary(2)) == job(2)
    for _ in range(50):
        assert (await snapshot.summary(1)).status is JobStatus.ONGOING  # type: ignore[union-attr]
    assert store.single_reads == 2

    store.jobs[1] = job(1, done=7)
    clock.now += REFRESH
    await snapshot.refresh()
    assert store.batch_reads == [[1, 2]]  # both jobs, one query
    assert (await snapshot.summary(1)) == job(1, done=7)
    assert store.single_reads == 2


async def test_an_end_is_seen_after_the_next_refresh_and_read_from_the_store() -> None:
    store, clock = CountingStore(job(1)), Clock()
    snapshot = snapshot_of(store, clock)
    await snapshot.summary(1)
    store.jobs[1] = job(1, JobStatus.COMPLETED, done=10)
    # Until the next refresh the copy still says ongoing: the documented lag.
    assert (await snapshot.summary(1)).status is JobStatus.ONGOING  # type: ignore[union-attr]
    clock.now += REFRESH
    await snapshot.refresh()
    reads = store.single_reads
    assert (await snapshot.summary(1)).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    assert store.single_reads == reads + 1


async def test_an_ended_job_is_never_answered_from_an_old_read() -> None:
    # Failed here, retried on another replica: the next poll must see it ongoing again.
    store, clock = CountingStore(job(1, JobStatus.FAILED)), Clock()
    snapshot = snapshot_of(store, clock)
    assert (await snapshot.summary(1)).status is JobStatus.FAILED  # type: ignore[union-attr]
    store.jobs[1] = job(1)
    assert (await snapshot.summary(1)).status is JobStatus.ONGOING  # type: ignore[union-attr]
    assert store.single_reads == 2


async def test_a_copy_past_two_intervals_is_read_again() -> None:
    store, clock = CountingStore(job(1)), Clock()
    snapshot = snapshot_of(store, clock)
    await snapshot.summary(1)
    clock.now += 2 * REFRESH
    await snapshot.summary(1)
    assert store.single_reads == 1
    clock.now += 0.01  # the refreshes stopped (a store outage): the copy is too old
    store.jobs[1] = job(1, JobStatus.CANCELLED)
    assert (await snapshot.summary(1)).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert store.single_reads == 2


async def test_forget_drops_the_copy_and_a_read_begun_before_it() -> None:
    store, clock = CountingStore(job(1)), Clock()
    snapshot = snapshot_of(store, clock)
    await snapshot.summary(1)
    store.hold = asyncio.Event()
    refreshing = asyncio.create_task(snapshot.refresh())
    await asyncio.sleep(0)  # the refresh has read "ongoing" and waits
    clock.now += 0.01
    store.jobs[1] = replace(job(1), status=JobStatus.CANCELLED)
    snapshot.forget(1)  # cancelled through this process
    store.hold.set()
    await refreshing
    assert (await snapshot.summary(1)).status is JobStatus.CANCELLED  # type: ignore[union-attr]


async def test_a_slow_refresh_never_replaces_a_later_read() -> None:
    store, clock = CountingStore(job(1)), Clock()
    snapshot = snapshot_of(store, clock)
    await snapshot.summary(1)
    clock.now += REFRESH
    store.hold = asyncio.Event()
    refreshing = asyncio.create_task(snapshot.refresh())
    await asyncio.sleep(0)  # the refresh has read done=0 and waits
    clock.now += 1.5 * REFRESH  # the first copy is too old: the next poll reads the store
    store.jobs[1] = job(1, done=5)
    assert (await snapshot.summary(1)) == job(1, done=5)
    store.hold.set()
    await refreshing
    assert (await snapshot.summary(1)) == job(1, done=5)


async def test_only_recently_polled_ongoing_jobs_are_read() -> None:
    store, clock = CountingStore(job(1), job(2), job(3, JobStatus.COMPLETED)), Clock()
    snapshot = snapshot_of(store, clock)
    for job_id in (1, 2, 3, 4):  # 4 is unknown
        await snapshot.summary(job_id)
    clock.now += WATCH_SECONDS / 2
    await snapshot.summary(2)  # polled again, so still watched; job 1 is not
    clock.now += WATCH_SECONDS / 2 + 0.01
    await snapshot.refresh()
    assert store.batch_reads == [[2]]


async def test_past_max_watched_polls_read_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.jobs.status_snapshot.MAX_WATCHED", 2)
    store, clock = CountingStore(job(1), job(2), job(3)), Clock()
    snapshot = snapshot_of(store, clock)
    for job_id in (1, 2, 3, 3):
        await snapshot.summary(job_id)
    assert store.single_reads == 4  # job 3 was never copied


async def test_the_refresher_runs_every_interval_and_stops_on_close() -> None:
    store = CountingStore(job(1))
    snapshot = StatusSnapshot(cast(JobStore, store), 0.01)
    await snapshot.summary(1)
    snapshot.start()

    await asyncio.wait_for(store.read_twice.wait(), timeout=10)
    await snapshot.close()
    reads = len(store.batch_reads)
    await asyncio.sleep(0.05)
    assert len(store.batch_reads) == reads
