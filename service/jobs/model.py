"""The job domain: statuses, visits, per-image outcomes and the Job record itself.

A ``Job`` is mutated only by its job store, on behalf of the job manager actor;
everything that leaves the actor is an immutable view built here.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from service.outcomes import UNKNOWN_STORE_REASON, FailureKind, ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.store_master import Store

__all__ = [
    "IMAGE_OVERHEAD_BYTES",
    "VISIT_OVERHEAD_BYTES",
    "ImageRow",
    "ImageState",
    "Job",
    "JobStatus",
    "JobSummary",
    "StoreError",
    "Visit",
    "estimated_bytes",
    "image_error",
    "image_state",
    "normalise_visit_time",
    "store_error",
    "summary_bytes",
    "unknown_store_error",
]


class JobStatus(StrEnum):
    """Lower-case members are the wire values."""

    ONGOING = "ongoing"
    COMPLETED = "completed"
    FAILED = "failed"
    # A client stopped it: no new image starts; those in flight may still report.
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self is not JobStatus.ONGOING


@dataclass(frozen=True, slots=True)
class Visit:
    """``image_urls`` are the URLs as shown, passwords masked (``user:***@``);
    ``fetch_urls`` holds them as given, only when that differs, for the download."""

    store_id: str
    visit_time: str
    image_urls: tuple[str, ...]
    fetch_urls: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class StoreError:
    store_id: str
    error: str


@dataclass(frozen=True, slots=True)
class JobSummary:
    job_id: int
    status: JobStatus
    created_at: datetime
    finished_at: datetime | None
    total: int
    done: int
    failed: int
    errors: tuple[StoreError, ...]
    # The job's run: 0, then one more for every retry of its failed images.
    epoch: int = 0


class ImageState(StrEnum):
    """Where one image stands, as /api/jobs/<id> shows it."""

    PENDING = "pending"
    MEASURED = "measured"
    FAILED = "failed"
    CANCELLED = "cancelled"  # its job was cancelled before it started


@dataclass(frozen=True, slots=True)
class ImageRow:
    """One image's result, flattened for the API and exports."""

    store_id: str
    store_name: str | None
    area_code: str | None
    visit_time: str
    url: str
    width: int | None
    height: int | None
    perimeter: int | None
    error: str | None
    state: ImageState = ImageState.PENDING
    # Its position among the job's images (submission order): where a filtered page goes on.
    index: int = 0


def image_state(width: int | None, error: str | None, status: JobStatus) -> ImageState:
    """An image's state from its result and its job's status."""
    if width is not None:
        return ImageState.MEASURED
    if error is not None:
        return ImageState.FAILED
    return ImageState.CANCELLED if status is JobStatus.CANCELLED else ImageState.PENDING


# Immutable, so one instance serves every image of every unknown store.
_UNKNOWN_STORE = ImageOutcome.failed(UNKNOWN_STORE_REASON, FailureKind.UNKNOWN_STORE)


@dataclass(slots=True)
class _StoreFailure:
    first_reason: str
    unknown_store: bool
    first_index: int
    images: int = 0


@dataclass(slots=True)
class Job:
    job_id: int
    visits: tuple[Visit, ...]
    stores: tuple[Store | None, ...]
    created_at: datetime
    status: JobStatus = JobStatus.ONGOING
    finished_at: datetime | None = None
    done: int = 0
    failed: int = 0
    outcomes: list[ImageOutcome | None] = field(default_factory=list)
    # visit_starts[i] is the flat index of visit i's first image.
    visit_starts: list[int] = field(default_factory=list)
    _store_failures: dict[str, _StoreFailure] = field(default_factory=dict)
    _store_order: dict[str, int] = field(default_factory=dict)
    _errors: tuple[StoreError, ...] = ()
    epoch: int = 0
    # Where its completion webhook goes (as given), or None.
    callback_url: str | None = None

    @classmethod
    def create(
        cls, job_id: int, visits: tuple[Visit, ...], stores: tuple[Store | None, ...]
    ) -> Job:
        starts: list[int] = []
        outcomes: list[ImageOutcome | None] = []
        order: dict[str, int] = {}
        unknown: dict[str, _StoreFailure] = {}
        for position, (visit, store) in enumerate(zip(visits, stores, strict=True)):
            starts.append(len(outcomes))
            order.setdefault(visit.store_id, position)
            count = len(visit.image_urls)
            if store is not None:
                outcomes += [None] * count
                continue
            # Never fetched: an unknown store's images fail as the job is created,
            # in bulk (a submit can carry 100,000 of them).
            outcomes += [_UNKNOWN_STORE] * count
            failure = unknown.get(visit.store_id)
            if failure is None:
                reason = unknown_store_error(visit.store_id)
                unknown[visit.store_id] = _StoreFailure(reason, True, starts[-1], count)
            else:
                failure.images += count
        failed = sum(failure.images for failure in unknown.values())
        return cls(
            job_id=job_id,
            visits=visits,
            stores=stores,
            created_at=datetime.now(UTC),
            done=failed,
            failed=failed,
            outcomes=outcomes,
            visit_starts=starts,
            _store_failures=unknown,
            _store_order=order,
        )

    def unknown_store_images(self) -> dict[str, int]:
        """Store id -> images failed for an unknown store (all of them, from creation)."""
        return {
            store_id: failure.images
            for store_id, failure in self._store_failures.items()
            if failure.unknown_store
        }

    @property
    def total(self) -> int:
        return len(self.outcomes)

    def pending_images(self) -> Iterator[ImageTask]:
        """Every image without an outcome yet, in submission order, as pipeline work."""
        for visit, store, start in zip(self.visits, self.stores, self.visit_starts, strict=True):
            if store is None:
                continue
            for offset, url in enumerate(visit.fetch_urls or visit.image_urls):
                if self.outcomes[start + offset] is None:
                    yield ImageTask(
                        self.job_id, start + offset, url, visit.store_id, epoch=self.epoch
                    )

    def visit_at(self, index: int) -> int:
        return bisect.bisect_right(self.visit_starts, index) - 1

    def record(self, index: int, outcome: ImageOutcome, epoch: int = 0) -> bool:
        """Settle one image; False when ignored: settled already, from an earlier run, or
        the job has ended (a cancelled job still takes the images that were in flight)."""
        if self.outcomes[index] is not None or epoch != self.epoch:
            return False
        if self.status.is_terminal and self.status is not JobStatus.CANCELLED:
            return False
        self.outcomes[index] = outcome
        self.done += 1
        if outcome.error is None:
            return True
        self.failed += 1
        self._note_failure(index, outcome.error)
        if self.status is JobStatus.CANCELLED:
            self._errors = self.store_errors()  # a late failure joins the list
        return True

    def _note_failure(self, index: int, error: str) -> None:
        visit_index = self.visit_at(index)
        visit = self.visits[visit_index]
        failure = self._store_failures.get(visit.store_id)
        # Report the store's first failing image in submission order, whatever
        # order the downloads happened to finish in.
        if failure is None or index < failure.first_index:
            url = visit.image_urls[index - self.visit_starts[visit_index]]
            reason = image_error(url, error)
            images = failure.images if failure else 0
            failure = _StoreFailure(reason, False, index, images)
            self._store_failures[visit.store_id] = failure
        failure.images += 1

    def cancel(self, at: datetime) -> bool:
        """Stop an ongoing job; False if it had ended already."""
        if self.status.is_terminal:
            return False
        self.status = JobStatus.CANCELLED
        self.finished_at = at
        self._errors = self.store_errors()
        return True

    def reopen(self, retry: frozenset[FailureKind]) -> list[int]:
        """Put the images that failed with a kind in ``retry`` back to unsettled, start a
        new run (epoch), and return their indexes; the job is ongoing again."""
        indexes = [
            index
            for index, outcome in enumerate(self.outcomes)
            if outcome is not None and outcome.kind in retry
        ]
        for index in indexes:
            self.outcomes[index] = None
        self.done -= len(indexes)
        self.failed -= len(indexes)
        self.epoch += 1
        self.status = JobStatus.ONGOING
        self.finished_at = None
        self._errors = ()
        # The error list is rebuilt from what is still failed (unknown stores included).
        unknown = {
            store_id: failure
            for store_id, failure in self._store_failures.items()
            if failure.unknown_store
        }
        self._store_failures = unknown
        for index, outcome in enumerate(self.outcomes):
            if (
                outcome is not None
                and outcome.error is not None
                and outcome.kind not in (FailureKind.UNKNOWN_STORE,)
            ):
                self._note_failure(index, outcome.error)
        return indexes

    @property
    def all_settled(self) -> bool:
        return self.done == self.total

    def finish(self, at: datetime) -> None:
        """The one transition out of ongoing; later calls change nothing."""
        if self.status.is_terminal:
            return
        self.status = JobStatus.FAILED if self.failed else JobStatus.COMPLETED
        self.finished_at = at
        # A terminal job never changes, so its error list is built once, not per poll.
        self._errors = self.store_errors()

    def store_errors(self) -> tuple[StoreError, ...]:
        ordered = sorted(self._store_failures.items(), key=lambda item: self._store_order[item[0]])
        errors = []
        for store_id, failure in ordered:
            message = store_error(failure.first_reason, failure.images, failure.unknown_store)
            errors.append(StoreError(store_id, message))
        return tuple(errors)

    def summary(self) -> JobSummary:
        return JobSummary(
            job_id=self.job_id,
            status=self.status,
            created_at=self.created_at,
            finished_at=self.finished_at,
            total=self.total,
            done=self.done,
            failed=self.failed,
            errors=self._errors,
            epoch=self.epoch,
        )

    def rows(self, offset: int, limit: int) -> list[ImageRow]:
        """Image results in submission order; unsettled images have no dimensions yet."""
        end = min(offset + limit, self.total)
        return self._rows(range(offset, end)) if offset < end else []

    def failed_rows(self, offset: int, limit: int) -> list[ImageRow]:
        """Up to ``limit`` failed images from image ``offset`` on, in submission order.

        A scan: the memory store has no index, and holds only test and benchmark jobs.
        """
        indexes: list[int] = []
        for index in range(offset, self.total):
            outcome = self.outcomes[index]
            if outcome is not None and outcome.error is not None:
                indexes.append(index)
                if len(indexes) == limit:
                    break
        return self._rows(indexes)

    def _rows(self, indexes: Sequence[int]) -> list[ImageRow]:
        """The rows of ``indexes``, which must be ascending."""
        rows: list[ImageRow] = []
        if not indexes:
            return rows
        visit_index = self.visit_at(indexes[0])
        for index in indexes:
            while (
                visit_index + 1 < len(self.visits) and self.visit_starts[visit_index + 1] <= index
            ):
                visit_index += 1
            visit = self.visits[visit_index]
            store = self.stores[visit_index]
            outcome = self.outcomes[index] or ImageOutcome()
            rows.append(
                ImageRow(
                    store_id=visit.store_id,
                    store_name=store.name if store else None,
                    area_code=store.area_code if store else None,
                    visit_time=visit.visit_time,
                    url=visit.image_urls[index - self.visit_starts[visit_index]],
                    width=outcome.width,
                    height=outcome.height,
                    perimeter=outcome.perimeter,
                    error=outcome.error,
                    state=image_state(outcome.width, outcome.error, self.status),
                    index=index,
                )
            )
        return rows


# What one image and one visit cost in a store beyond their text: row headers, keys,
# indexes and the result columns. A generous round figure: the bounds it feeds are
# about orders of magnitude (a 100,000-image job, not a 10-image one).
IMAGE_OVERHEAD_BYTES = 160
VISIT_OVERHEAD_BYTES = 120


def estimated_bytes(visits: Sequence[Visit]) -> int:
    """What a job of ``visits`` holds in a store, roughly: its text plus per-row overhead.

    Errors add at most ``MAX_ERROR_LENGTH`` per failed image, counted in the overhead
    only on average; the figure is for bounding growth, not for billing.
    """
    total = 0
    for visit in visits:
        total += VISIT_OVERHEAD_BYTES + len(visit.store_id) + len(visit.visit_time)
        total += sum(IMAGE_OVERHEAD_BYTES + len(url) for url in visit.image_urls)
        if visit.fetch_urls:
            total += sum(len(url) for url in visit.fetch_urls)
    return total


def summary_bytes(summary: JobSummary) -> int:
    """What a finished job's cached answer holds: its error list, mostly."""
    return 200 + sum(64 + len(error.store_id) + len(error.error) for error in summary.errors)


def unknown_store_error(store_id: str) -> str:
    """A store's entry in a job's error list when the store master lacks it."""
    return f"store_id {store_id!r} not found in store master"


def image_error(url: str, error: str) -> str:
    """A store's entry in a job's error list: its first failing image in submission order."""
    return f"image {url} failed: {error}"


def store_error(first: str, images: int, unknown_store: bool) -> str:
    """The error list entry, saying how many more of the store's images failed."""
    if images > 1 and not unknown_store:
        return f"{first} (and {images - 1} more failed images of this store)"
    return first


def normalise_visit_time(raw: str) -> str:
    """ISO 8601 times come back normalised (UTC when they carry an offset); others verbatim."""
    text = raw.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return raw
    if parsed.tzinfo is None:
        return parsed.isoformat()
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:  # "0001-01-01T00:00:00+01:00" has no UTC time in range
        return raw
    return in_utc.isoformat().replace("+00:00", "Z")
