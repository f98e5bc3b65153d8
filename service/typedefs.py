"""Types shared across modules, kept here so that no module imports another for a type."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from service.jobs.model import ImageOutcome, Job, JobSummary

__all__ = ["ImageWork", "JobObserver", "SettleCallback", "WorkSink"]

# (flat image index within its job, image URL as given: credentials unmasked, never shown)
ImageWork: TypeAlias = tuple[int, str]

# Called by the pipeline with a job id and a batch of (flat index, outcome).
SettleCallback: TypeAlias = Callable[[int, Sequence[tuple[int, "ImageOutcome"]]], None]


class WorkSink(Protocol):
    """What the job manager hands images to: the pipeline."""

    def enqueue(
        self, job_id: int, images: Iterator[ImageWork], count: int, on_settled: SettleCallback
    ) -> None:
        """Accept ``count`` images of a job; each is reported back through ``on_settled``."""

    def cancel(self, job_id: int) -> None:
        """Drop a job's images that have not started."""


class JobObserver(Protocol):
    """Told by the job manager, inside the actor, what happened to jobs (metrics, logs)."""

    def job_created(self, job: Job) -> None: ...

    def images_settled(self, job: Job, settled: Sequence[tuple[int, ImageOutcome]]) -> None:
        """Called after ``settled`` was recorded. An outcome the job ignored (a second
        report for one image) is not ``job.outcomes[index]``."""

    def job_finished(self, summary: JobSummary) -> None: ...
