"""Finished jobs are kept for a time-to-live and up to a count, then answer like unknown ones.

Both local stores keep the same rules; the clock is the test's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.errors import StoreFull
from service.jobs.memory_store import MemoryJobStore
from service.jobs.model import (
    JobStatus,
    JobSummary,
    StoreError,
    Visit,
    estimated_bytes,
    summary_bytes,
)
from service.jobs.sqlite_store import SqliteJobStore, _SummaryCache
from service.jobs.store import JobStore
from service.outcomes import ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.store_master import Store

STORE = Store(store_id="S1", name="Shop", area_code="1")
VISIT = Visit("S1", "t", ("http://x/a.jpg",))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


StoreFactory = Callable[..., JobStore]


@pytest.fixture(params=["memory", "sqlite"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[JobStore] = []

    def make(*, ttl: float = 3600.0, max_finished: int = 1000, clock: FakeClock) -> JobStore:
        store: JobStore
        if request.param == "memory":
            store = MemoryJobStore(ttl=ttl, max_finished=max_finished, clock=clock)
        else:
            path = tmp_path / f"jobs-{len(opened)}.db"
            store = SqliteJobStore(path, ttl=ttl, max_finished=max_finished, clock=clock)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def opened(store: JobStore) -> JobStore:
    await store.open()
    return store


async def finished_job(store: JobStore) -> int:
    created = await store.create([VISIT], [STORE], max_pending=1000)
    task = ImageTask(created.job_id, 0, VISIT.image_urls[0], "S1")
    recorded = await store.record([SettledImage(task, ImageOutcome.measured(1, 1))])
    assert [summary.job_id for summary in recorded.finished] == [created.job_id]
    return created.job_id


async def test_finished_job_is_forgotten_after_its_ttl(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await opened(make_store(ttl=60.0, clock=clock))
    job_id = await finished_job(store)
    clock.now += 59.9
    assert await store.summary(job_id) is not None
    clock.now += 0.1
    # Gone on read even before any sweep ran, exactly like an id never issued.
    assert await store.summary(job_id) is None
    assert await store.rows(job_id, 0, 10) is None
    assert await store.recent(10) == []


async def test_sweep_deletes_expired_jobs_and_keeps_younger_ones(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await opened(make_store(ttl=60.0, clock=clock))
    old = [await finished_job(store) for _ in range(3)]
    clock.now += 30
    young = await finished_job(store)
    clock.now += 30
    assert await store.sweep() == 3
    assert [summary.job_id for summary in await store.recent(10)] == [young]
    for job_id in old:
        assert await store.summary(job_id) is None


async def test_ongoing_jobs_are_never_deleted(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = await opened(make_store(ttl=1.0, max_finished=1, clock=clock))
    ongoing = await store.create([VISIT], [STORE], max_pending=1000)
    for _ in range(5):
        await finished_job(store)
    clock.now += 1000
    await store.sweep()
    summary = await store.summary(ongoing.job_id)
    assert summary is not None
    assert summary.status is JobStatus.ONGOING
    assert [job.job_id for job in await store.unfinished()] == [ongoing.job_id]


async def test_at_most_max_finished_jobs_are_kept_oldest_finished_first_out(
    make_store: StoreFactory,
) -> None:
    clock = FakeClock()
    store = await opened(make_store(max_finished=3, clock=clock))
    ids = []
    for _ in range(10):
        ids.append(await finished_job(store))
        clock.now += 1
    await store.sweep()
    assert [summary.job_id for summary in await store.recent(10)] == ids[:-4:-1]
    for job_id in ids[:7]:
        assert await store.summary(job_id) is None


def job_size() -> int:
    return estimated_bytes([VISIT])


async def test_the_memory_store_bounds_finished_jobs_by_their_bytes() -> None:
    # Room for three finished jobs' worth of bytes, however many the count allows.
    store = MemoryJobStore(max_finished=1000, finished_bytes=3 * job_size(), clock=FakeClock())
    ids = [await finished_job(store) for _ in range(10)]
    assert [summary.job_id for summary in await store.recent(10)] == ids[:-4:-1]
    assert len(store) == 3


async def test_the_sqlite_store_deletes_old_finished_jobs_to_fit_max_database_bytes(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = SqliteJobStore(
        tmp_path / "jobs.db",
        ttl=3600.0,
        max_finished=1000,
        max_database_bytes=3 * job_size(),
        clock=clock,
    )
    await store.open()
    try:
        ids = []
        for _ in range(6):
            ids.append(await finished_job(store))
            clock.now += 1
        # Each new job made room by deleting the oldest finished ones.
        assert [summary.job_id for summary in await store.recent(10)] == ids[:-4:-1]
        # Unfinished work is never deleted: past the bound it refuses new jobs.
        for _ in range(3):
            await store.create([VISIT], [STORE], max_pending=1000)
        with pytest.raises(StoreFull, match="job store is full"):
            await store.create([VISIT], [STORE], max_pending=1000)
    finally:
        await store.close()


def test_the_finished_summary_cache_is_bounded_by_bytes() -> None:
    cache = _SummaryCache(limit=3 * summary_bytes(summary_of(1)))
    for job_id in range(1, 6):
        cache.put(summary_of(job_id))
    assert [job_id for job_id in range(1, 6) if cache.get(job_id)] == [3, 4, 5]
    assert cache.bytes <= 3 * summary_bytes(summary_of(1))
    huge = summary_of(9, errors=5000)
    cache.put(huge)  # larger than the whole cache: not kept, nothing else evicted for it
    assert cache.get(9) is None
    assert cache.get(5) is not None


def summary_of(job_id: int, errors: int = 1) -> JobSummary:
    return JobSummary(
        job_id,
        JobStatus.FAILED,
        datetime.now(UTC),
        datetime.now(UTC),
        1,
        1,
        1,
        tuple(StoreError(f"S{n}", "image http://x/a.jpg failed: HTTP 404") for n in range(errors)),
    )
