"""The job manager actor, driven directly with a work sink that settles at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from service.jobs.manager import JobManager
from service.jobs.model import ImageOutcome, Job, JobStatus, JobSummary, Visit
from service.jobs.store import InMemoryJobStore
from service.store_master import Store, StoreMaster
from service.typedefs import ImageWork, SettleCallback

MASTER = StoreMaster({"S1": Store("S1", "Shop", "7")})


class SettlesEverything:
    """A work sink that measures every image as 1x1 as soon as it is handed over."""

    def enqueue(
        self, job_id: int, images: Iterator[ImageWork], count: int, on_settled: SettleCallback
    ) -> None:
        on_settled(job_id, [(index, ImageOutcome.measured(1, 1)) for index, _ in images])

    def cancel(self, job_id: int) -> None:
        pass


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


async def test_a_failing_observer_never_leaves_a_job_ongoing() -> None:
    observer = BrokenObserver()
    manager = JobManager(InMemoryJobStore(), MASTER, SettlesEverything(), observer=observer)
    manager.start()
    try:
        job_id = await manager.submit([Visit("S1", "t", ("http://a/1", "http://a/2"))])
        # Handled in order by the actor, so the settle message is processed by now.
        summary = await manager.rows(job_id, 0, 10)
        assert summary is not None
        assert summary[0].status is JobStatus.COMPLETED
        assert observer.calls == 3
    finally:
        await manager.close()
