"""The job manager actor: one task owns all job state and drains a message queue.

Handlers ``await`` its query methods, which post a message with a future and
wait for the answer; the pipeline reports settled images with ``settle``,
which posts and returns at once. Nothing else touches the job store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from service.errors import ServiceUnavailable
from service.job_store import JobStore
from service.jobs import (
    UNKNOWN_STORE_REASON,
    ImageOutcome,
    ImageRow,
    JobStatus,
    JobSummary,
    Visit,
)
from service.stores import StoreMaster
from service.typedefs import WorkSink

__all__ = ["JobManager"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Submit:
    visits: tuple[Visit, ...]
    reply: asyncio.Future[int]


@dataclass(frozen=True, slots=True)
class _Settled:
    job_id: int
    settled: Sequence[tuple[int, ImageOutcome]]


@dataclass(frozen=True, slots=True)
class _GetSummary:
    job_id: int
    reply: asyncio.Future[JobSummary | None]


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


_Message = _Submit | _Settled | _GetSummary | _GetRows | _ListRecent
_STOP = object()


class JobManager:
    def __init__(self, job_store: JobStore, store_master: StoreMaster, work: WorkSink) -> None:
        self._jobs = job_store
        self._store_master = store_master
        self._work = work
        self._inbox: asyncio.Queue[_Message | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="job-manager")

    async def close(self) -> None:
        """Stop after the messages already queued; later questions get 503."""
        task, self._task = self._task, None
        if task is None:
            return
        self._inbox.put_nowait(_STOP)
        await task

    # -- the client side: called by handlers and the pipeline --------------

    async def submit(self, visits: Sequence[Visit]) -> int:
        return await self._ask(lambda reply: _Submit(tuple(visits), reply))

    def settle(self, job_id: int, settled: Sequence[tuple[int, ImageOutcome]]) -> None:
        if self._task is not None:
            self._inbox.put_nowait(_Settled(job_id, settled))

    async def summary(self, job_id: int) -> JobSummary | None:
        return await self._ask(lambda reply: _GetSummary(job_id, reply))

    async def rows(
        self, job_id: int, offset: int, limit: int
    ) -> tuple[JobSummary, list[ImageRow]] | None:
        return await self._ask(lambda reply: _GetRows(job_id, offset, limit, reply))

    async def recent(self, limit: int, status: JobStatus | None = None) -> list[JobSummary]:
        return await self._ask(lambda reply: _ListRecent(limit, status, reply))

    async def _ask(self, make: Callable[[asyncio.Future[T]], _Message]) -> T:
        if self._task is None:
            raise ServiceUnavailable("service is shutting down")
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
            except Exception as exc:
                # One bad message must not take job state down with it.
                log.exception("job manager failed on %s", type(message).__name__)
                reply = getattr(message, "reply", None)
                if reply is not None and not reply.done():
                    reply.set_exception(exc)

    def _refuse_remaining(self) -> None:
        while not self._inbox.empty():
            reply = getattr(self._inbox.get_nowait(), "reply", None)
            if reply is not None and not reply.done():
                reply.set_exception(ServiceUnavailable("service is shutting down"))

    def _handle(self, message: _Message) -> None:
        match message:
            case _Settled(job_id, settled):
                self._record(job_id, settled)
            case _Submit(visits, reply):
                _answer(reply, self._create(visits))
            case _GetSummary(job_id, reply):
                _answer(reply, self._jobs.summary(job_id))
            case _GetRows(job_id, offset, limit, reply):
                summary = self._jobs.summary(job_id)
                rows = self._jobs.rows(job_id, offset, limit)
                _answer(reply, None if summary is None or rows is None else (summary, rows))
            case _ListRecent(limit, status, reply):
                _answer(reply, self._jobs.recent(limit, status))

    def _create(self, visits: tuple[Visit, ...]) -> int:
        stores = tuple(self._store_master.get(visit.store_id) for visit in visits)
        job = self._jobs.create(visits, stores)
        log.info(
            "job created",
            extra={"job_id": job.job_id, "visits": len(visits), "images": job.total},
        )
        unknown = [
            (job.visit_starts[position] + offset, ImageOutcome.failed(UNKNOWN_STORE_REASON))
            for position, store in enumerate(stores)
            if store is None
            for offset in range(len(visits[position].image_urls))
        ]
        if unknown:
            self._record(job.job_id, unknown)
        if not job.all_settled:
            pending = job.total - job.done
            self._work.enqueue(job.job_id, job.pending_images(), pending, self.settle)
        return job.job_id

    def _record(self, job_id: int, settled: Sequence[tuple[int, ImageOutcome]]) -> None:
        job = self._jobs.record(job_id, settled)
        if job is None or job.status.is_terminal or not job.all_settled:
            return
        status = self._jobs.finish(job_id, datetime.now(UTC))
        log.info(
            "job finished",
            extra={
                "job_id": job_id,
                "status": status.value if status else None,
                "images": job.total,
                "failed_images": job.failed,
            },
        )


def _answer(reply: asyncio.Future[Any], value: Any) -> None:
    # The asker may have gone away (client disconnected, handler cancelled).
    if not reply.done():
        reply.set_result(value)
