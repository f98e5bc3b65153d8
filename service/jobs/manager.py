"""The job manager actor: one task owns this process's job transitions and writes them through
the store.

Submits and settled images reach it as messages in one inbox, handled in order.
Outcomes that arrive together (the pipeline reports once per event-loop turn, and
more pile up while a commit is under way) go to the store in one ``record``
call: one transaction across every job in it. Reads (status, pages, lists) do
not queue behind that: they ask the store directly, which answers from what is
committed.

When the store cannot be written, settled outcomes wait here and are retried;
past ``unsaved_results_limit`` the work queue is paused until the store is back.
At shutdown the manager leads a drain: refuse new jobs, let images in flight
finish for a grace period, then (memory store only) fail what is left; a durable
store keeps it queued for the next start or another replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from service.config import JobSettings
from service.errors import JobError, ServiceError, ShuttingDown, StoreUnavailable
from service.jobs.deliveries import DeliveryView
from service.jobs.memory_store import overloaded
from service.jobs.model import ImageRow, JobStatus, JobSummary, Visit
from service.jobs.status_snapshot import StatusSnapshot
from service.jobs.store import CreatedJob, IdempotencyKey, JobStore
from service.outcomes import SHUTDOWN_REASON, FailureKind, ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.store_master import StoreMaster

__all__ = ["JobManager", "JobObserver", "WorkQueue"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Expired jobs are also dropped on every read; the sweep frees space when nobody asks.
MAX_SWEEP_INTERVAL = 60.0
# Backoff between tries to write outcomes the store refused, in seconds.
UNSAVED_RETRY_FIRST = 0.5
UNSAVED_RETRY_MAX = 5.0


class WorkQueue(Protocol):
    """Where the manager puts images to be processed (the pipeline's work source)."""

    def add(self, job_id: int, tasks: Iterator[ImageTask], count: int) -> None: ...

    def remove(self, job_id: int) -> None:
        """The job ended: drop whatever of it has not started."""

    def pause(self) -> None:
        """Hand out no more images until ``resume``."""

    def resume(self) -> None: ...


class JobObserver(Protocol):
    """Told by the manager, inside the actor, what happened to jobs (metrics, logs)."""

    def job_created(self, created: CreatedJob) -> None: ...

    def images_recorded(self, recorded: Sequence[SettledImage]) -> None:
        """Outcomes the store committed (repeats and stale claims left out)."""

    def job_finished(self, summary: JobSummary) -> None: ...


@dataclass(frozen=True, slots=True)
class _Submit:
    visits: tuple[Visit, ...]
    idempotency: IdempotencyKey | None
    reply: asyncio.Future[CreatedJob]
    callback_url: str | None = None


@dataclass(frozen=True, slots=True)
class _Cancel:
    job_id: int
    reply: asyncio.Future[JobSummary]


@dataclass(frozen=True, slots=True)
class _Retry:
    job_id: int
    reply: asyncio.Future[int]


@dataclass(frozen=True, slots=True)
class _Outcomes:
    settled: Sequence[SettledImage]


@dataclass(frozen=True, slots=True)
class _Flush:
    """Answered once every outcome before it is written (or kept to retry)."""

    reply: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class _FailUnfinished:
    reason: str
    reply: asyncio.Future[int]


@dataclass(frozen=True, slots=True)
class _Sweep:
    pass


_Message = _Submit | _Cancel | _Retry | _Outcomes | _Flush | _FailUnfinished | _Sweep
_STOP = object()


class JobManager:
    def __init__(
        self,
        store: JobStore,
        store_master: StoreMaster,
        queue: WorkQueue,
        settings: JobSettings,
        *,
        observer: JobObserver | None = None,
    ) -> None:
        self._store = store
        self._observer = observer
        self._store_master = store_master
        self._queue = queue
        self._max_pending = settings.max_pending_images
        self._unsaved_limit = settings.unsaved_results_limit
        self._sweep_interval = min(settings.job_ttl, MAX_SWEEP_INTERVAL)
        # A shared store answers every read with a query; status polls share one instead.
        self._snapshot = (
            StatusSnapshot(store, settings.status_refresh)
            if store.shared and settings.status_refresh > 0
            else None
        )
        self._inbox: asyncio.Queue[_Message | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._accepting = True
        # Outcomes the store could not take yet, oldest first; retried on a timer.
        self._unsaved: list[SettledImage] = []
        self._unsaved_retry: asyncio.TimerHandle | None = None
        self._unsaved_delay = UNSAVED_RETRY_FIRST
        self._paused_for_unsaved = False
        # Set while no image of any job is pending: what the memory store's drain waits for.
        self._all_settled = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Queue the work a previous run left unfinished, then start the actor."""
        if self._task is not None:
            return
        if not self._store.shared:
            # A shared store hands out work through claims instead.
            resumed = 0
            for job in await self._store.unfinished():
                self._queue.add(job.job_id, iter(job.tasks), len(job.tasks))
                resumed += len(job.tasks)
            if resumed:
                log.info("resumed unfinished jobs", extra={"images": resumed})
        self._task = asyncio.create_task(self._run(), name="job-manager")
        self._sweeper = asyncio.create_task(self._sweep_periodically(), name="job-sweeper")
        if self._snapshot is not None:
            self._snapshot.start()

    async def close(self) -> None:
        """Stop after the messages already queued; later questions get ``ShuttingDown``."""
        task, self._task = self._task, None
        if task is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._snapshot is not None:
            await self._snapshot.close()
        if self._unsaved_retry is not None:
            self._unsaved_retry.cancel()
        self._inbox.put_nowait(_STOP)
        await task
        if self._unsaved:
            # Durable stores redo these images at the next start; nothing is lost.
            log.warning(
                "stopping with %d settled images not written to the store", len(self._unsaved)
            )

    @property
    def accepting(self) -> bool:
        """False once a drain began: new jobs are refused (readiness reads this)."""
        return self._accepting

    @property
    def pending_images(self) -> int:
        return self._store.pending_images()

    @property
    def unsaved_results(self) -> int:
        return len(self._unsaved)

    async def drain(
        self,
        grace: float,
        in_flight_done: Callable[[], Awaitable[object]],
        cut_short: asyncio.Event | None = None,
    ) -> int:
        """Refuse new jobs; give running work up to ``grace`` seconds; returns images failed.

        A durable store stops starting new images and waits for those in flight
        (``in_flight_done``); what never started stays queued. The memory store
        waits for whole jobs and fails what is left, since nothing would resume it.
        ``cut_short`` (a second signal) ends the wait early.
        """
        self._accepting = False
        if self._store.durable:
            self._queue.pause()
            await _wait_any(in_flight_done(), cut_short, grace)
            await self.flush()
            return 0
        self._update_all_settled()
        await _wait_any(self._all_settled.wait(), cut_short, grace)
        self._queue.pause()
        if self._task is None:
            return 0
        return await self._ask(lambda reply: _FailUnfinished(SHUTDOWN_REASON, reply))

    def _update_all_settled(self) -> None:
        if self._store.pending_images() == 0:
            self._all_settled.set()
        else:
            self._all_settled.clear()

    async def flush(self) -> None:
        """Wait until every outcome reported so far is written (or kept to retry)."""
        if self._task is not None:
            await self._ask(_Flush)

    # -- the client side: called by handlers and the pipeline --------------

    def check_admission(self) -> None:
        """Refuse at once when no job could be admitted, before a body is read and parsed.

        Parsing a large body costs more than anything else a refused submit does,
        and spending it while overloaded would deepen the overload. The store
        checks again, exactly, as it creates the job.
        """
        if not self._accepting:
            raise ShuttingDown()
        pending = self._store.pending_images()
        if pending >= self._max_pending:
            raise overloaded(pending, 0, self._max_pending)

    async def submit(
        self,
        visits: Sequence[Visit],
        idempotency: IdempotencyKey | None = None,
        *,
        callback_url: str | None = None,
    ) -> CreatedJob:
        """Create a job (or, for an Idempotency-Key seen before, answer its job: ``replayed``).

        With ``callback_url``, the job's end is posted there (a webhook delivery).
        """
        if not self._accepting:
            raise ShuttingDown()
        return await self._ask(
            lambda reply: _Submit(tuple(visits), idempotency, reply, callback_url)
        )

    async def cancel(self, job_id: int) -> JobSummary:
        """Stop a job: no image of it starts any more; ``JobNotFound`` or ``JobConflict``."""
        return await self._ask(lambda reply: _Cancel(job_id, reply))

    async def retry(self, job_id: int) -> int:
        """Process a failed job's retryable failed images again; returns how many."""
        if not self._accepting:
            raise ShuttingDown()
        return await self._ask(lambda reply: _Retry(job_id, reply))

    def settle(self, settled: Sequence[SettledImage]) -> None:
        """The pipeline's report of images whose outcome is final (a ``SettleSink``)."""
        if self._task is not None:
            self._inbox.put_nowait(_Outcomes(settled))

    async def summary(self, job_id: int) -> JobSummary | None:
        self._check_open()
        return await self._store.summary(job_id)

    async def status(self, job_id: int) -> JobSummary | None:
        """The summary for a status poll. On a shared store, a job that just ended may
        still read as ongoing, for up to about ``status_refresh`` (see ``StatusSnapshot``)."""
        self._check_open()
        if self._snapshot is None:
            return await self._store.summary(job_id)
        return await self._snapshot.summary(job_id)

    async def rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        self._check_open()
        return await self._store.rows(job_id, offset, limit)

    async def failed_rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        """Up to ``limit`` of the job's failed images, from image ``offset`` on."""
        self._check_open()
        return await self._store.failed_rows(job_id, offset, limit)

    async def recent(
        self, limit: int, status: JobStatus | None = None, before: int | None = None
    ) -> list[JobSummary]:
        self._check_open()
        return await self._store.recent(limit, status, before)

    async def delivery(self, job_id: int) -> DeliveryView | None:
        """The job's latest webhook delivery, or None."""
        self._check_open()
        return await self._store.latest_delivery(job_id)

    def _check_open(self) -> None:
        if self._task is None:
            raise ShuttingDown()

    async def _ask(self, make: Callable[[asyncio.Future[T]], _Message]) -> T:
        self._check_open()
        reply: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(make(reply))
        return await reply

    # -- the actor ---------------------------------------------------------

    async def _run(self) -> None:
        while True:
            first = await self._inbox.get()
            batch = [first]
            while not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            # Outcomes in a row are written together; every other message is handled
            # in its turn, after the outcomes that came before it. (An empty report is
            # the retry of outcomes the store refused: it writes those.)
            outcomes: list[SettledImage] | None = None
            for message in batch:
                if isinstance(message, _Outcomes):
                    outcomes = outcomes or []
                    outcomes.extend(message.settled)
                    continue
                if outcomes is not None:
                    await self._record(outcomes)
                    outcomes = None
                if message is _STOP:
                    self._refuse(batch[batch.index(message) + 1 :])
                    self._refuse_remaining()
                    return
                await self._handle_safely(message)  # type: ignore[arg-type]
            if outcomes is not None:
                await self._record(outcomes)

    async def _handle_safely(self, message: _Message) -> None:
        try:
            await self._handle(message)
        except (ServiceError, JobError) as exc:
            # Refusing (overload, shutdown, store down, a finished job) is an answer.
            _fail(message, exc)
        except Exception as exc:
            # One bad message must not take job state down with it.
            log.exception("job manager failed on %s", type(message).__name__)
            _fail(message, exc)

    def _refuse(self, messages: Sequence[object]) -> None:
        for message in messages:
            _fail(message, ShuttingDown())

    def _refuse_remaining(self) -> None:
        while not self._inbox.empty():
            _fail(self._inbox.get_nowait(), ShuttingDown())

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            self._inbox.put_nowait(_Sweep())

    async def _handle(self, message: _Message) -> None:
        match message:
            case _Submit(visits, idempotency, reply, callback_url):
                _answer(reply, await self._create(visits, idempotency, callback_url))
            case _Cancel(job_id, reply):
                _answer(reply, await self._cancel(job_id))
            case _Retry(job_id, reply):
                _answer(reply, await self._retry(job_id))
            case _Flush(reply):
                if self._unsaved:
                    await self._record([])
                _answer(reply, None)
            case _FailUnfinished(reason, reply):
                _answer(reply, await self._fail_unfinished(reason))
            case _Sweep():
                evicted = await self._store.sweep()
                if evicted:
                    log.debug("deleted %d expired jobs", evicted)

    async def _create(
        self,
        visits: tuple[Visit, ...],
        idempotency: IdempotencyKey | None,
        callback_url: str | None = None,
    ) -> CreatedJob:
        if not self._accepting:
            raise ShuttingDown()
        stores = [self._store_master.get(visit.store_id) for visit in visits]
        # The store checks admission as it commits, so concurrent submits (on any
        # replica, for a shared store) cannot all slip under the cap.
        created = await self._store.create(
            visits,
            stores,
            max_pending=self._max_pending,
            idempotency=idempotency,
            callback_url=callback_url,
        )
        if created.replayed:
            log.info("submit replayed for its idempotency key", extra={"job_id": created.job_id})
            return created
        log.info(
            "job created",
            extra={"job_id": created.job_id, "visits": len(visits), "images": created.total},
        )
        self._notify(lambda observer: observer.job_created(created))
        if created.finished is not None:
            self._finished(created.finished)
            await self._sweep_if_full()
        else:
            count = created.total - sum(created.unknown_stores.values())
            self._queue.add(created.job_id, _tasks(created.job_id, visits, stores), count)
        return created

    async def _cancel(self, job_id: int) -> JobSummary:
        summary = await self._store.cancel(job_id)
        if self._snapshot is not None:
            self._snapshot.forget(job_id)
        self._queue.remove(job_id)
        self._update_all_settled()
        log.info(
            "job cancelled",
            extra={"job_id": job_id, "done": summary.done, "images": summary.total},
        )
        self._notify(lambda observer: observer.job_finished(summary))
        return summary

    async def _retry(self, job_id: int) -> int:
        reopened = await self._store.retry(job_id, max_pending=self._max_pending)
        # Empty for a shared store, whose replicas claim the images (the add wakes them).
        self._queue.add(job_id, iter(reopened.tasks), len(reopened.tasks))
        self._update_all_settled()
        log.info("job retried", extra={"job_id": job_id, "images": reopened.queued})
        return reopened.queued

    async def _record(self, outcomes: list[SettledImage]) -> None:
        batch = self._unsaved + outcomes if self._unsaved else outcomes
        if not batch:
            return
        try:
            recorded = await self._store.record(batch)
        except StoreUnavailable as exc:
            self._keep_unsaved(batch, exc)
            return
        self._store_back()
        self._update_all_settled()
        if recorded.accepted:
            self._notify(lambda observer: observer.images_recorded(recorded.accepted))
        for summary in recorded.finished:
            self._finished(summary)
        if recorded.finished:
            await self._sweep_if_full()

    async def _sweep_if_full(self) -> None:
        if not self._store.needs_sweep:
            return
        try:
            await self._store.sweep()
        except StoreUnavailable as exc:
            log.warning("cannot delete old finished jobs", extra={"reason": exc.message})

    def _keep_unsaved(self, batch: list[SettledImage], exc: StoreUnavailable) -> None:
        first = not self._unsaved
        self._unsaved = batch
        if first:
            log.error(
                "cannot write settled images; keeping them to retry",
                extra={"images": len(batch), "reason": exc.message},
            )
        if len(batch) > self._unsaved_limit and not self._paused_for_unsaved:
            self._paused_for_unsaved = True
            self._queue.pause()
            log.error(
                "taking no new work until the job store is back",
                extra={"unsaved_images": len(batch), "limit": self._unsaved_limit},
            )
        if self._unsaved_retry is None and self._task is not None:
            loop = asyncio.get_running_loop()
            self._unsaved_retry = loop.call_later(self._unsaved_delay, self._retry_unsaved)
            self._unsaved_delay = min(self._unsaved_delay * 2, UNSAVED_RETRY_MAX)

    def _retry_unsaved(self) -> None:
        self._unsaved_retry = None
        # An empty batch: _record prepends what is unsaved.
        self._inbox.put_nowait(_Outcomes(()))

    def _store_back(self) -> None:
        if self._unsaved:
            log.info(
                "job store is back; settled images written", extra={"images": len(self._unsaved)}
            )
        self._unsaved = []
        self._unsaved_delay = UNSAVED_RETRY_FIRST
        if self._paused_for_unsaved:
            self._paused_for_unsaved = False
            if self._accepting:
                self._queue.resume()

    def _finished(self, summary: JobSummary) -> None:
        self._queue.remove(summary.job_id)
        log.info(
            "job finished",
            extra={
                "job_id": summary.job_id,
                "status": summary.status.value,
                "images": summary.total,
                "failed_images": summary.failed,
            },
        )
        self._notify(lambda observer: observer.job_finished(summary))

    def _notify(self, event: Callable[[JobObserver], None]) -> None:
        """Tell the observer; its failure is logged and never stops the job's own flow."""
        if self._observer is None:
            return
        try:
            event(self._observer)
        except Exception:
            log.exception("job observer failed")

    async def _fail_unfinished(self, reason: str) -> int:
        failure = ImageOutcome.failed(reason, FailureKind.SHUTDOWN)
        unsettled: list[SettledImage] = []
        for job in await self._store.unfinished():
            self._queue.remove(job.job_id)
            unsettled += [SettledImage(task, failure) for task in job.tasks]
        if unsettled:
            await self._record(unsettled)
            log.warning("failed %d unfinished images: %s", len(unsettled), reason)
        return len(unsettled)


def _tasks(
    job_id: int, visits: Sequence[Visit], stores: Sequence[object | None]
) -> Iterator[ImageTask]:
    """A new job's images to process, in submission order (unknown stores have none)."""
    index = 0
    for visit, store in zip(visits, stores, strict=True):
        urls = visit.fetch_urls or visit.image_urls
        if store is not None:
            for offset, url in enumerate(urls):
                yield ImageTask(job_id, index + offset, url, visit.store_id)
        index += len(urls)


async def _wait_any(done: Awaitable[object], cut_short: asyncio.Event | None, grace: float) -> None:
    waits = [asyncio.ensure_future(done)]
    if cut_short is not None:
        waits.append(asyncio.ensure_future(cut_short.wait()))
    try:
        await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


def _fail(message: object, exc: BaseException) -> None:
    reply = getattr(message, "reply", None)
    if reply is not None and not reply.done():
        reply.set_exception(exc)


def _answer(reply: asyncio.Future[Any], value: Any) -> None:
    # The asker may have gone away (client disconnected, handler cancelled).
    if not reply.done():
        reply.set_result(value)
