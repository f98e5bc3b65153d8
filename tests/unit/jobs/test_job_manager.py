"""The job manager actor on its own: a recording work queue stands in for the pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from service.config import Settings
from service.errors import Overloaded, ShuttingDown
from service.jobs.manager import JobManager
from service.jobs.model import Job, JobStatus, JobSummary, Visit
from service.jobs.store import InMemoryJobStore
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

    def add(self, job_id: int, tasks: Iterator[ImageTask], count: int) -> None:
        self.tasks[job_id] = list(tasks)
        assert len(self.tasks[job_id]) == count

    def remove(self, job_id: int) -> None:
        self.removed.append(job_id)


class CountingObserver:
    def __init__(self) -> None:
        self.finished: list[JobSummary] = []
        self.settled = 0

    def job_created(self, job: Job) -> None:
        pass

    def images_settled(self, job: Job, settled: Sequence[tuple[int, ImageOutcome]]) -> None:
        # A repeated report is passed on too; the job's own record tells it apart.
        self.settled += sum(job.outcomes[index] is outcome for index, outcome in settled)

    def job_finished(self, summary: JobSummary) -> None:
        self.finished.append(summary)


class BrokenObserver:
    """Every notification fails, as a metrics or logging bug would."""

    def __init__(self) -> None:
        self.calls = 0

    def job_created(self, job: Job) -> None:
        self.calls += 1
        raise RuntimeError("observer bug")

    def images_settled(self, job: Job, settled: Sequence[tuple[int, ImageOutcome]]) -> None:
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


@pytest.fixture
async def manager(queue: RecordingQueue, observer: CountingObserver) -> AsyncIterator[JobManager]:
    manager = JobManager(
        InMemoryJobStore(), MASTER, queue, Settings(max_images_per_job=5).jobs, observer=observer
    )
    manager.start()
    yield manager
    await manager.close()


async def status(manager: JobManager, job_id: int) -> JobSummary:
    found = await manager.rows(job_id, 0, 10)
    assert found is not None
    return found[0]


async def test_settles_sent_before_a_question_are_in_its_answer(
    manager: JobManager, queue: RecordingQueue
) -> None:
    job_id = await manager.submit([visit("http://a/1", "http://a/2", "http://a/3")])
    tasks = queue.tasks[job_id]
    manager.settle(settled(tasks[:1]))
    manager.settle(settled(tasks[1:2]))
    # The question waits behind both reports in the inbox: it sees both.
    summary = await status(manager, job_id)
    assert (summary.done, summary.status) == (2, JobStatus.ONGOING)
    assert manager.pending_images == 1


async def test_a_job_finishes_once_however_often_its_images_are_reported(
    manager: JobManager, queue: RecordingQueue, observer: CountingObserver
) -> None:
    job_id = await manager.submit([visit("http://a/1", "http://a/2")])
    tasks = queue.tasks[job_id]
    failure = ImageOutcome.failed("HTTP 404", FailureKind.HTTP_STATUS)
    manager.settle(settled(tasks[:1], failure))
    manager.settle(settled(tasks))  # the first image again, now measured
    manager.settle(settled(tasks))  # after the job ended
    summary = await status(manager, job_id)
    assert (summary.status, summary.done, summary.failed) == (JobStatus.FAILED, 2, 1)
    assert [finished.job_id for finished in observer.finished] == [job_id]
    assert observer.settled == 2
    assert job_id in queue.removed  # the finished job is dropped from the queue
    assert manager.pending_images == 0


async def test_admission_is_checked_again_inside_the_actor(
    queue: RecordingQueue, observer: CountingObserver
) -> None:
    settings = Settings(max_images_per_job=3, max_pending_images=4).jobs
    manager = JobManager(InMemoryJobStore(), MASTER, queue, settings, observer=observer)
    manager.start()
    try:
        urls = ("http://a/1", "http://a/2", "http://a/3")
        # Both pass the early check (nothing pending yet); only one fits under the cap.
        manager.check_admission()
        results = await asyncio.gather(
            manager.submit([visit(*urls)]), manager.submit([visit(*urls)]), return_exceptions=True
        )
        assert sum(isinstance(result, int) for result in results) == 1
        refused = next(result for result in results if isinstance(result, Overloaded))
        assert "3 images pending, this job adds 3, the limit is 4" in refused.message
        assert manager.pending_images == 3
    finally:
        await manager.close()


async def test_drain_fails_what_is_left_as_shutdown_and_close_refuses_new_work(
    manager: JobManager, queue: RecordingQueue
) -> None:
    job_id = await manager.submit([visit("http://a/1", "http://a/2")])
    manager.settle(settled(queue.tasks[job_id][:1]))
    failed = await manager.drain(grace=0)
    assert failed == 1
    summary = await status(manager, job_id)
    assert (summary.status, summary.failed) == (JobStatus.FAILED, 1)
    assert summary.errors[0].error.endswith(SHUTDOWN_REASON)
    with pytest.raises(ShuttingDown):
        manager.check_admission()
    await manager.close()
    with pytest.raises(ShuttingDown):
        await manager.submit([visit("http://a/3")])
    with pytest.raises(ShuttingDown):
        await manager.summary(job_id)


async def test_a_failing_observer_never_leaves_a_job_ongoing(queue: RecordingQueue) -> None:
    observer = BrokenObserver()
    manager = JobManager(InMemoryJobStore(), MASTER, queue, Settings().jobs, observer=observer)
    manager.start()
    try:
        job_id = await manager.submit([visit("http://a/1", "http://a/2")])
        manager.settle(settled(queue.tasks[job_id]))
        summary = await status(manager, job_id)
        assert summary.status is JobStatus.COMPLETED
        assert observer.calls == 3
    finally:
        await manager.close()


async def test_unknown_store_images_fail_at_creation_and_are_never_queued(
    manager: JobManager, queue: RecordingQueue
) -> None:
    job_id = await manager.submit([visit("http://a/1", store_id="NOPE"), visit("http://a/2")])
    assert [task.index for task in queue.tasks[job_id]] == [1]
    summary = await status(manager, job_id)
    assert (summary.done, summary.failed, summary.total) == (1, 1, 2)
