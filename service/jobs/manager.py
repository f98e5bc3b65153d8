"""The job manager actor: one task owns all job state and drains a message queue.

Handlers ``await`` its query methods, which post a message with a future and
wait for the answer; the pipeline reports settled images with ``settle``,
which posts and returns at once. Nothing else touches the job store.

The actor also keeps the count of unsettled images across jobs, which is what
admission control compares with ``max_pending_images``, and it leads a drain at
shutdown: refuse new jobs, give running ones a grace period, fail the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from service.config import JobSettings
from service.errors import Overloaded, ServiceError, ShuttingDown
from service.jobs.model import ImageRow, Job, JobStatus, JobSummary, Visit
from service.jobs.store import JobStore
from service.outcomes import SHUTDOWN_REASON, FailureKind, ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.store_master import StoreMaster

__all__ = ["JobManager", "JobObserver", "WorkQueue"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class WorkQueue(Protocol):
    """Where the manager puts a job's images to be processed (the pipeline's fair queue)."""

    def add(self, job_id: int, tasks: Iterator[ImageTask], count: int) -> None: ...

    def remove(self, job_id: int) -> None:
        """The job ended (or is being failed): drop whatever of it has not started."""


class JobObserver(Protocol):
    """Told by the job manager, inside the actor, what happened to jobs (metrics, logs)."""

    def job_created(self, job: Job) -> None: ...

    def images_settled(self, job: Job, settled: Sequence[tuple[int, ImageOutcome]]) -> None:
        """Called after ``settled`` was recorded. An outcome the job ignored (a second
        report for one image) is not ``job.outcomes[index]``."""

    def job_finished(self, summary: JobSummary) -> None: ...


@dataclass(frozen=True, slots=True)
class _Submit:
    visits: tuple[Visit, ...]
    reply: asyncio.Future[int]


@dataclass(frozen=True, slots=True)
class _Outcomes:
    settled: Sequence[SettledImage]


@dataclass(frozen=True, slots=True)
class _GetRows:
    job_id: int
    offset: int
    limit: int
    reply: asyncio.Future[tuple[JobSummary, list[ImageRow]] | None]


@dataclass(frozen=True, slots=True)
class _ListRecent:
    limit: int
    status: JobStatus | None
    reply: asyncio.Future[list[JobSummary]]


@dataclass(frozen=True, slots=True)
class _FailOngoing:
    reason: str
    reply: asyncio.Future[int]


@dataclass(frozen=True, slots=True)
class _Sweep:
    pass


_Message = _Submit | _Outcomes | _GetRows | _ListRecent | _FailOngoing | _Sweep
_STOP = object()

# Expired jobs are also dropped on every read; the sweep frees memory when nobody asks.
MAX_SWEEP_INTERVAL = 60.0


class JobManager:
    def __init__(
        self,
        job_store: JobStore,
        store_master: StoreMaster,
        queue: WorkQueue,
        settings: JobSettings,
        *,
        observer: JobObserver | None = None,
    ) -> None:
        self._jobs = job_store
        self._observer = observer
        self._store_master = store_master
        self._queue = queue
        self._max_pending = settings.max_pending_images
        # Expired jobs are also dropped on every read; the sweep frees memory when nobody asks.
        self._sweep_interval = min(settings.job_ttl, MAX_SWEEP_INTERVAL)
        self._inbox: asyncio.Queue[_Message | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._accepting = True
        # Images of ongoing jobs not yet settled: queued, downloading, measuring or
        # waiting out the simulated GPU delay. Kept by the actor, read anywhere.
        self.pending_images = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="job-manager")
            self._sweeper = asyncio.create_task(self._sweep_periodically(), name="job-sweeper")

    async def close(self) -> None:
        """Stop after the messages already queued; later questions get 503."""
        task, self._task = self._task, None
        if task is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        self._inbox.put_nowait(_STOP)
        await task

    @property
    def accepting(self) -> bool:
        """False once a drain began: new jobs are refused (readiness reads this)."""
        return self._accepting

    async def drain(self, grace: float, cut_short: asyncio.Event | None = None) -> int:
        """Refuse new jobs, wait up to ``grace`` seconds for running ones, fail the rest.

        ``cut_short`` ends the wait early (a second signal). Returns how many
        images were failed. Queries keep being answered throughout.
        """
        self._accepting = False
        waits = [asyncio.ensure_future(self._idle.wait())]
        if cut_short is not None:
            waits.append(asyncio.ensure_future(cut_short.wait()))
        try:
            await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        if self._task is None:
            return 0
        return await self._ask(lambda reply: _FailOngoing(SHUTDOWN_REASON, reply))

    # -- the client side: called by handlers and the pipeline --------------

    def check_admission(self) -> None:
        """Refuse at once when no job could be admitted, before a body is read and parsed.

        Parsing a large body costs more than anything else a refused submit does,
        and spending it while overloaded would deepen the overload.
        """
        if not self._accepting:
            raise ShuttingDown()
        if self.pending_images >= self._max_pending:
            raise self._busy(0)

    async def submit(self, visits: Sequence[Visit]) -> int:
        if not self._accepting:
            raise ShuttingDown()
        return await self._ask(lambda reply: _Submit(tuple(visits), reply))

    def settle(self, settled: Sequence[SettledImage]) -> None:
        """The pipeline's report of images whose outcome is final (a ``SettleSink``)."""
        if self._task is not None:
            self._inbox.put_nowait(_Outcomes(settled))

    async def summary(self, job_id: int) -> JobSummary | None:
        # Status polls are the hot read, so they skip the inbox: job state only
        # changes inside _handle, which never awaits, so reading between two
        # messages is consistent, and the answer comes without waiting two
        # event-loop turns (the actor's and the reply's) behind pipeline work.
        if self._task is None:
            raise ShuttingDown()
        return self._jobs.summary(job_id)

    async def rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        return await self._ask(lambda reply: _GetRows(job_id, offset, limit, reply))

    async def recent(self, limit: int, status: JobStatus | None = None) -> list[JobSummary]:
        return await self._ask(lambda reply: _ListRecent(limit, status, reply))

    async def _ask(self, make: Callable[[asyncio.Future[T]], _Message]) -> T:
        if self._task is None:
            raise ShuttingDown()
        reply: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(make(reply))
        return await reply

    # -- the actor ---------------------------------------------------------

    async def _run(self) -> None:
        while True:
            message = await self._inbox.get()
            if message is _STOP:
                self._refuse_remaining()
                return
            try:
                self._handle(message)  # type: ignore[arg-type]
            except ServiceError as exc:
                # Refusing a job (overload, shutdown) is an answer, not a fault.
                _fail(message, exc)
            except Exception as exc:
                # One bad message must not take job state down with it.
                log.exception("job manager failed on %s", type(message).__name__)
                _fail(message, exc)

    def _refuse_remaining(self) -> None:
        while not self._inbox.empty():
            _fail(self._inbox.get_nowait(), ShuttingDown())

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            self._inbox.put_nowait(_Sweep())

    def _handle(self, message: _Message) -> None:
        match message:
            case _Outcomes(settled):
                by_job: dict[int, list[tuple[int, ImageOutcome]]] = {}
                for task, outcome in settled:
                    by_job.setdefault(task.job_id, []).append((task.index, outcome))
                for job_id, outcomes in by_job.items():
                    self._record(job_id, outcomes)
            case _Submit(visits, reply):
                _answer(reply, self._create(visits))
            case _GetRows(job_id, offset, limit, reply):
                summary = self._jobs.summary(job_id)
                rows = self._jobs.rows(job_id, offset, limit)
                _answer(reply, None if summary is None or rows is None else (summary, rows))
            case _ListRecent(limit, status, reply):
                _answer(reply, self._jobs.recent(limit, status))
            case _FailOngoing(reason, reply):
                _answer(reply, self._fail_ongoing(reason))
            case _Sweep():
                evicted = self._jobs.sweep()
                if evicted:
                    log.debug("evicted %d expired jobs", evicted)

    def _admit(self, visits: tuple[Visit, ...]) -> None:
        if not self._accepting:
            raise ShuttingDown()
        images = sum(len(visit.image_urls) for visit in visits)
        if self.pending_images + images > self._max_pending:
            raise self._busy(images)

    def _busy(self, images: int) -> Overloaded:
        adds = f", this job adds {images}" if images else ""
        return Overloaded(
            f"service is busy: {self.pending_images} images pending{adds}, "
            f"the limit is {self._max_pending}; retry later"
        )

    def _create(self, visits: tuple[Visit, ...]) -> int:
        # Checked inside the actor, so concurrent submits cannot all slip under the cap.
        self._admit(visits)
        stores = tuple(self._store_master.get(visit.store_id) for visit in visits)
        # An unknown store's images are failed by the job itself as it is created.
        job = self._jobs.create(visits, stores)
        self._add_pending(job.total - job.done)
        log.info(
            "job created",
            extra={"job_id": job.job_id, "visits": len(visits), "images": job.total},
        )
        self._notify(lambda observer: observer.job_created(job))
        if job.all_settled:
            self._finish(job)
        else:
            pending = job.total - job.done
            self._queue.add(job.job_id, job.pending_images(), pending)
        return job.job_id

    def _record(self, job_id: int, settled: Sequence[tuple[int, ImageOutcome]]) -> None:
        before = self._jobs.get(job_id)
        if before is None or before.status.is_terminal:
            return
        done_before = before.done
        job = self._jobs.record(job_id, settled)
        if job is None:
            return
        self._add_pending(done_before - job.done)
        self._notify(lambda observer: observer.images_settled(job, settled))
        if job.all_settled:
            self._finish(job)

    def _finish(self, job: Job) -> None:
        self._queue.remove(job.job_id)
        status = self._jobs.finish(job.job_id, datetime.now(UTC))
        log.info(
            "job finished",
            extra={
                "job_id": job.job_id,
                "status": status.value if status else None,
                "images": job.total,
                "failed_images": job.failed,
            },
        )
        summary = self._jobs.summary(job.job_id)
        if summary is not None:
            self._notify(lambda observer: observer.job_finished(summary))

    def _notify(self, event: Callable[[JobObserver], None]) -> None:
        """Tell the observer; its failure is logged and never stops the job's own flow."""
        if self._observer is None:
            return
        try:
            event(self._observer)
        except Exception:
            log.exception("job observer failed")

    def _fail_ongoing(self, reason: str) -> int:
        failed = 0
        for job in list(self._jobs.ongoing()):
            self._queue.remove(job.job_id)
            unsettled = [
                (index, ImageOutcome.failed(reason, FailureKind.SHUTDOWN))
                for index, outcome in enumerate(job.outcomes)
                if outcome is None
            ]
            failed += len(unsettled)
            self._record(job.job_id, unsettled)
        if failed:
            log.warning("failed %d unfinished images: %s", failed, reason)
        return failed

    def _add_pending(self, delta: int) -> None:
        self.pending_images += delta
        if self.pending_images:
            self._idle.clear()
        else:
            self._idle.set()


def _fail(message: object, exc: BaseException) -> None:
    reply = getattr(message, "reply", None)
    if reply is not None and not reply.done():
        reply.set_exception(exc)


def _answer(reply: asyncio.Future[Any], value: Any) -> None:
    # The asker may have gone away (client disconnected, handler cancelled).
    if not reply.done():
        reply.set_result(value)
