"""Finished jobs are kept for a time-to-live and up to a count, then answer like unknown ones.

Both local stores keep the same rules; the clock is the test's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.jobs.memory_store import MemoryJobStore
from service.jobs.model import JobStatus, Visit
from service.jobs.sqlite_store import SqliteJobStore
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
