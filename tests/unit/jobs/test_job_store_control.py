"""Cancel and retry in the local stores: what they change, and the run (epoch) that keeps a
late result of an earlier run from settling an image of the new one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.errors import JobConflict, JobNotFound
from service.jobs.memory_store import MemoryJobStore
from service.jobs.model import ImageState, JobStatus, Visit
from service.jobs.sqlite_store import SqliteJobStore
from service.jobs.store import JobStore
from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.store_master import Store

SHOP = Store("S1", "Shop", "7")
VISIT = Visit("S1", "t", ("http://x/0", "http://x/1", "http://x/2"))
HTTP_503 = ImageOutcome.failed("HTTP 503 after 3 attempts", FailureKind.HTTP_STATUS)
TOO_BIG = ImageOutcome.failed("image too large: 90000x90000", FailureKind.PIXELS)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    store: JobStore
    if request.param == "memory":
        store = MemoryJobStore()
    else:
        store = SqliteJobStore(tmp_path / "jobs.db", ttl=3600.0, max_finished=100)
    await store.open()
    yield store
    await store.close()


def task(job_id: int, index: int, epoch: int = 0) -> ImageTask:
    return ImageTask(job_id, index, VISIT.image_urls[index], "S1", epoch=epoch)


async def test_a_retried_run_ignores_a_late_result_of_the_run_before(store: JobStore) -> None:
    created = await store.create([VISIT], [SHOP], max_pending=100)
    job = created.job_id
    await store.record(
        [
            SettledImage(task(job, 0), ImageOutcome.measured(1, 1)),
            SettledImage(task(job, 1), HTTP_503),
            SettledImage(task(job, 2), TOO_BIG),
        ]
    )
    reopened = await store.retry(job, max_pending=100)
    # The 503 goes again; the image over max_pixels cannot change, so it stays failed.
    assert reopened.queued == 1
    assert [(t.index, t.epoch) for t in reopened.tasks] == [(1, 1)]
    summary = await store.summary(job)
    assert summary is not None
    assert (summary.status, summary.done, summary.failed, summary.epoch) == (
        JobStatus.ONGOING,
        2,
        1,
        1,
    )
    # A result from the first run arrives late: it settles nothing.
    late = await store.record([SettledImage(task(job, 1, epoch=0), ImageOutcome.measured(5, 5))])
    assert late.accepted == []
    now = await store.record([SettledImage(task(job, 1, epoch=1), ImageOutcome.measured(2, 2))])
    assert [s.status for s in now.finished] == [JobStatus.FAILED]
    (final,) = now.finished
    # The error list is rebuilt: only the image that still fails is named.
    assert [error.error for error in final.errors] == [
        "image http://x/2 failed: image too large: 90000x90000"
    ]
    found = await store.rows(job, 0, 10)
    assert found is not None
    assert [row.perimeter for row in found[1]] == [4, 8, None]


async def test_cancel_keeps_results_that_come_in_after_it(store: JobStore) -> None:
    created = await store.create([VISIT], [SHOP], max_pending=100)
    job = created.job_id
    await store.record([SettledImage(task(job, 0), HTTP_503)])
    summary = await store.cancel(job)
    assert summary.status is JobStatus.CANCELLED
    assert store.pending_images() == 0  # the budget is free at once
    assert [error.store_id for error in summary.errors] == ["S1"]
    # An image that was in flight reports after the cancel: recorded, and shown.
    late = await store.record([SettledImage(task(job, 1), ImageOutcome.measured(3, 3))])
    assert len(late.accepted) == 1 and late.finished == []
    found = await store.rows(job, 0, 10)
    assert found is not None
    summary, rows = found
    assert summary.status is JobStatus.CANCELLED
    assert [row.state for row in rows] == [
        ImageState.FAILED,
        ImageState.MEASURED,
        ImageState.CANCELLED,
    ]
    with pytest.raises(JobConflict, match="job already cancelled"):
        await store.cancel(job)
    with pytest.raises(JobNotFound):
        await store.cancel(job + 100)
    with pytest.raises(JobConflict, match="only a failed job can be retried"):
        await store.retry(job, max_pending=100)


async def test_a_job_whose_failures_cannot_change_has_nothing_to_retry(store: JobStore) -> None:
    created = await store.create([VISIT], [SHOP], max_pending=100)
    job = created.job_id
    await store.record([SettledImage(task(job, i), TOO_BIG) for i in range(3)])
    with pytest.raises(JobConflict, match="nothing to retry"):
        await store.retry(job, max_pending=100)
