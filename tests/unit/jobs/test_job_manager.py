"""The job manager actor on its own: a recording work queue stands in for the pipeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.errors import Overloaded, ShuttingDown, StoreUnavailable
from service.jobs.manager import JobManager
from service.jobs.memory_store import MemoryJobStore
from service.jobs.model import JobStatus, JobSummary, Visit
from service.jobs.sqlite_store import SqliteJobStore
from service.jobs.store import CreatedJob, JobStore
from service.outcomes import SHUTDOWN_REASON, FailureKind, ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.store_master import Store, StoreMaster

MASTER = StoreMaster({"S1": Store("S1", "Shop", "7"), "S2": Store("S2", "Kiosk", "8")})
MEASURED = ImageOutcome.measured(1, 1)


class RecordingQueue:
    """A ``WorkQueue`` that keeps what it is given, for the test to settle by hand."""

    def __init__(self) -> None:
        self.tasks: dict[int, list[ImageTask]] = {}
        self.removed: list[int] = []
        self.paused = False

    def add(self, job_id: int, tasks: Iterator[ImageTask], count: int) -> None:
        self.tasks[job_id] = list(tasks)
        assert len(self.tasks[job_id]) == count

    def remove(self, job_id: int) -> None:
        self.removed.append(job_id)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


class CountingObserver:
    def __init__(self) -> None:
        self.finished: list[JobSummary] = []
        self.settled = 0

    def job_created(self, created: CreatedJob) -> None:
        pass

    def images_recorded(self, recorded: Sequence[SettledImage]) -> None:
        self.settled += len(recorded)

    def job_finished(self, summary: JobSummary) -> None:
        self.finished.append(summary)


class BrokenObserver:
    """Every notification fails, as a metrics or logging bug would."""

    def __init__(self) -> None:
        self.calls = 0

    def job_created(self, created: CreatedJob) -> None:
        self.calls += 1
        raise RuntimeError("observer bug")

    def images_recorded(self, recorded: Sequence[SettledImage]) -> None:
        self.calls += 1
        raise RuntimeError("observer bug")

    def job_finished(self, summary: JobSummary) -> None:
        self.calls += 1
        raise RuntimeError("observer bug")


def visit(*urls: str, store_id: str = "S1") -> Visit:
    return Visit(store_id, "t", urls)


def settled(tasks: Sequence[ImageTask], outcome: ImageOutcome = MEASURED) -> list[SettledImage]:
    return [SettledImage(task, outcome) for task in tasks]


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def observer() -> CountingObserver:
    return CountingObserver()


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """Each actor test runs against both kinds of local store."""
    store: JobStore
    if request.param == "memory":
        store = MemoryJobStore()
    else:
        store = SqliteJobStore(tmp_path / "jobs.db", ttl=3600.0, max_finished=100)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def manager(
    store: JobStore, queue: RecordingQueue, observer: CountingObserver
) -> AsyncIterator[JobManager]:
    manager = JobManager(store, MASTER, queue, Settings().jobs, observer=observer)
    await manager.start()
    yield manager
    await manager.close()


async def nothing_in_flight() -> None:
    pass


async def status(manager: JobManager, job_id: int) -> JobSummary:
    found = await manager.rows(job_id, 0, 10)
    assert found is not None
    return found[0]


async def test_a_flush_returns_once_every_earlier_report_is_committed(
    manager: JobManager, queue: RecordingQueue
) -> None:
    job_id = (await manager.submit([visit("http://a/1", "http://a/2", "http://a/3")])).job_id
    tasks = queue.tasks[job_id]
    manager.settle(settled(tasks[:1]))
    manager.settle(settled(tasks[1:2]))
    # A flush waits behind both reports in the inbox: both are committed after it.
    await manager.flush()
    summary = await status(manager, job_id)
    assert (summary.done, summary.status) == (2, JobStatus.ONGOING)
    assert manager.pending_images == 1


async def test_a_job_finishes_once_however_often_its_images_are_reported(
    manager: JobManager, queue: RecordingQueue, observer: CountingObserver
) -> None:
    job_id = (await manager.submit([visit("http://a/1", "http://a/2")])).job_id
    tasks = queue.tasks[job_id]
    failure = ImageOutcome.failed("HTTP 404", FailureKind.HTTP_STATUS)
    manager.settle(settled(tasks[:1], failure))
    manager.settle(settled(tasks))  # the first image again, now measured
    manager.settle(settled(tasks))  # after the job ended
    await manager.flush()
    summary = await status(manager, job_id)
    assert (summary.status, summary.done, summary.failed) == (JobStatus.FAILED, 2, 1)
    assert [finished.job_id for finished in observer.finished] == [job_id]
    assert observer.settled == 2
    assert job_id in queue.removed  # the finished job is dropped from the queue
    assert manager.pending_images == 0


async def test_admission_is_checked_again_inside_the_actor(
    store: JobStore, queue: RecordingQueue, observer: CountingObserver
) -> None:
    settings = Settings(max_images_per_job=3, max_pending_images=4).jobs
    manager = JobManager(store, MASTER, queue, settings, observer=observer)
    await manager.start()
    try:
        urls = ("http://a/1", "http://a/2", "http://a/3")
        # Both pass the early check (nothing pending yet); only one fits under the cap.
        manager.check_admission()
        results = await asyncio.gather(
            manager.submit([visit(*urls)]), manager.submit([visit(*urls)]), return_exceptions=True
        )
        assert sum(isinstance(result, CreatedJob) for result in results) == 1
        refused = next(result for result in results if isinstance(result, Overloaded))
        assert "3 images pending, this job adds 3, the limit is 4" in refused.message
        assert manager.pending_images == 3
    finally:
        await manager.close()


async def test_drain_fails_what_is_left_as_shutdown_and_close_refuses_new_work(
    manager: JobManager, queue: RecordingQueue, store: JobStore
) -> None:
    job_id = (await manager.submit([visit("http://a/1", "http://a/2")])).job_id
    manager.settle(settled(queue.tasks[job_id][:1]))
    failed = await manager.drain(0, nothing_in_flight)
    assert queue.paused
    summary = await status(manager, job_id)
    if store.durable:
        # Left queued for the next start, never failed as "shutting down".
        assert failed == 0
        assert (summary.status, summary.done) == (JobStatus.ONGOING, 1)
        unfinished = await store.unfinished()
        assert [task.index for job in unfinished for task in job.tasks] == [1]
    else:
        assert failed == 1
        assert (summary.status, summary.failed) == (JobStatus.FAILED, 1)
        assert summary.errors[0].error.endswith(SHUTDOWN_REASON)
    with pytest.raises(ShuttingDown):
        manager.check_admission()
    await manager.close()
    with pytest.raises(ShuttingDown):
        await manager.submit([visit("http://a/3")])
    with pytest.raises(ShuttingDown):
        await manager.summary(job_id)


async def test_a_failing_observer_never_leaves_a_job_ongoing(
    store: JobStore, queue: RecordingQueue
) -> None:
    observer = BrokenObserver()
    manager = JobManager(store, MASTER, queue, Settings().jobs, observer=observer)
    await manager.start()
    try:
        job_id = (await manager.submit([visit("http://a/1", "http://a/2")])).job_id
        manager.settle(settled(queue.tasks[job_id]))
        await manager.flush()
        summary = await status(manager, job_id)
        assert summary.status is JobStatus.COMPLETED
        assert observer.calls == 3
    finally:
        await manager.close()


async def test_unknown_store_images_fail_at_creation_and_are_never_queued(
    manager: JobManager, queue: RecordingQueue
) -> None:
    job_id = (
        await manager.submit([visit("http://a/1", store_id="NOPE"), visit("http://a/2")])
    ).job_id
    assert [task.index for task in queue.tasks[job_id]] == [1]
    summary = await status(manager, job_id)
    assert (summary.done, summary.failed, summary.total) == (1, 1, 2)


class SwitchableStore:
    """A real store behind an outage switch: while ``down``, every write is refused."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def record(self, settled: Sequence[SettledImage]) -> Any:
        if self.down:
            raise StoreUnavailable("job store unavailable: switched off by the test")
        return await self._store.record(settled)


async def test_outcomes_the_store_refuses_are_kept_retried_and_pause_new_work(
    store: JobStore, queue: RecordingQueue
) -> None:
    switchable = SwitchableStore(store)
    settings = Settings(unsaved_results_limit=2).jobs
    manager = JobManager(switchable, MASTER, queue, settings)  # type: ignore[arg-type]
    await manager.start()
    try:
        job_id = (await manager.submit([visit("http://a/1", "http://a/2", "http://a/3")])).job_id
        switchable.down = True
        manager.settle(settled(queue.tasks[job_id][:2]))
        await manager.flush()
        assert manager.unsaved_results == 2
        assert not queue.paused  # at the limit, not past it
        manager.settle(settled(queue.tasks[job_id][2:]))
        await manager.flush()
        assert manager.unsaved_results == 3
        assert queue.paused
        assert (await status(manager, job_id)).done == 0  # nothing reported before it is kept
        switchable.down = False
        deadline = time.monotonic() + 10
        while manager.unsaved_results:  # the retry timer writes them
            assert time.monotonic() < deadline, "refused outcomes never written"
            await asyncio.sleep(0.02)
        assert not queue.paused
        assert (await status(manager, job_id)).status is JobStatus.COMPLETED
    finally:
        await manager.close()
