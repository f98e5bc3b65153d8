"""The job record: settling, the one terminal transition, and the error list."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.jobs.model import (
    Job,
    JobStatus,
    StoreError,
    Visit,
    normalise_visit_time,
)
from service.outcomes import UNKNOWN_STORE_REASON, FailureKind, ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.store_master import Store

KNOWN = Store("S1", "Shop", "7")


def make_job(*visits: Visit, known: bool = True) -> Job:
    stores = tuple(KNOWN if known else None for _ in visits)
    return Job.create(1, visits, stores)


def test_flat_indexes_follow_submission_order() -> None:
    job = make_job(Visit("S1", "t", ("a", "b")), Visit("S2", "t", ("c",)))
    assert job.total == 3
    assert list(job.pending_images()) == [
        ImageTask(1, 0, "a", "S1"),
        ImageTask(1, 1, "b", "S1"),
        ImageTask(1, 2, "c", "S2"),
    ]
    assert [job.visit_at(index) for index in range(3)] == [0, 0, 1]


def test_unknown_store_images_are_not_pending() -> None:
    job = Job.create(1, (Visit("S1", "t", ("a",)), Visit("X", "t", ("b",))), (KNOWN, None))
    assert list(job.pending_images()) == [ImageTask(1, 0, "a", "S1")]


def test_unknown_store_images_fail_as_the_job_is_created() -> None:
    visits = (
        Visit("X", "t", ("x-a", "x-b")),
        Visit("S1", "t", ("s1-a",)),
        Visit("Y", "t", ("y-a",)),
        Visit("X", "t", ("x-c",)),
    )
    job = Job.create(1, visits, (None, KNOWN, None, None))
    assert (job.total, job.done, job.failed) == (5, 4, 4)
    assert job.unknown_store_images() == {"X": 3, "Y": 1}
    unknown = ImageOutcome.failed(UNKNOWN_STORE_REASON, FailureKind.UNKNOWN_STORE)
    assert job.outcomes == [unknown, unknown, None, unknown, unknown]
    job.record(2, ImageOutcome.measured(2, 2))
    assert job.all_settled
    job.finish(datetime.now(UTC))
    assert job.summary().errors == (
        StoreError("X", "store_id 'X' not found in store master"),
        StoreError("Y", "store_id 'Y' not found in store master"),
    )


def test_completed_when_all_settled_without_failures() -> None:
    job = make_job(Visit("S1", "t", ("a", "b")))
    job.record(0, ImageOutcome.measured(4, 3))
    assert not job.all_settled
    job.record(1, ImageOutcome.measured(1, 1))
    job.finish(datetime.now(UTC))
    assert job.status is JobStatus.COMPLETED
    assert job.summary().errors == ()


def test_terminal_job_never_changes() -> None:
    job = make_job(Visit("S1", "t", ("a",)))
    job.record(0, ImageOutcome.measured(4, 3))
    first = datetime(2026, 1, 1, tzinfo=UTC)
    job.finish(first)
    job.record(0, ImageOutcome.failed("late", FailureKind.HTTP_STATUS))
    job.finish(datetime(2027, 1, 1, tzinfo=UTC))
    assert (job.status, job.finished_at, job.failed) == (JobStatus.COMPLETED, first, 0)


def test_settling_an_image_twice_counts_once() -> None:
    job = make_job(Visit("S1", "t", ("a", "b")))
    job.record(0, ImageOutcome.measured(4, 3))
    job.record(0, ImageOutcome.failed("again", FailureKind.HTTP_STATUS))
    assert (job.done, job.failed) == (1, 0)


def test_errors_name_each_failed_store_once_in_submission_order() -> None:
    visits = (
        Visit("S1", "t", ("s1-a", "s1-b")),
        Visit("S2", "t", ("s2-a",)),
        Visit("S3", "t", ("s3-a",)),
        Visit("S1", "t", ("s1-c",)),
    )
    job = Job.create(1, visits, (KNOWN, KNOWN, None, KNOWN))
    # Settle out of order: S1's later image fails first. S3's image (index 3) failed
    # as the job was created.
    job.record(4, ImageOutcome.failed("HTTP 404", FailureKind.HTTP_STATUS))
    job.record(2, ImageOutcome.measured(1, 1))
    job.record(1, ImageOutcome.failed("timed out", FailureKind.TIMEOUT))
    job.record(0, ImageOutcome.measured(1, 1))
    job.finish(datetime.now(UTC))

    assert job.status is JobStatus.FAILED
    assert job.summary().errors == (
        StoreError("S1", "image s1-b failed: timed out (and 1 more failed images of this store)"),
        StoreError("S3", "store_id 'S3' not found in store master"),
    )


def test_rows_carry_store_details_and_outcomes() -> None:
    job = Job.create(1, (Visit("S1", "t1", ("a", "b")), Visit("X", "t2", ("c",))), (KNOWN, None))
    job.record(0, ImageOutcome.measured(640, 480))
    rows = job.rows(0, 10)
    assert [(r.url, r.perimeter, r.store_name) for r in rows] == [
        ("a", 2240, "Shop"),
        ("b", None, "Shop"),
        ("c", None, None),
    ]
    assert [r.url for r in job.rows(1, 1)] == ["b"]
    assert job.rows(3, 10) == []


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("time of store visit", "time of store visit"),
        ("2024-01-02T10:00:00+05:30", "2024-01-02T04:30:00Z"),
        ("2024-01-02T10:00:00Z", "2024-01-02T10:00:00Z"),
        ("2024-01-02 10:00", "2024-01-02T10:00:00"),
        ("2024-01-02", "2024-01-02T00:00:00"),
    ],
)
def test_visit_time_is_normalised_when_iso_8601(raw: str, normalised: str) -> None:
    assert normalise_visit_time(raw) == normalised
