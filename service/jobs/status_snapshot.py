"""Status polls on a shared store, answered from one read of every polled job per interval.

On PostgreSQL a poll that queries costs it several turns of a busy event loop: taking a
connection, the query, giving it back. Instead, the ongoing jobs polled in the last
``WATCH_SECONDS`` are read together every ``status_refresh`` seconds, in one query, and a
poll of one of them is answered from that copy at once.

Only "ongoing" is answered from the copy. A job the copy does not hold, or one it last
saw end, is read from the store: a job retried on another replica is never shown as
ended from an old read. The price: a job that ended may show "ongoing" for about
``status_refresh`` longer. A cancel through this process drops the job's copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.errors import StoreUnavailable
from service.jobs.model import JobStatus, JobSummary
from service.jobs.store import JobStore

__all__ = ["StatusSnapshot"]

log = logging.getLogger(__name__)

# A job nobody polled for this long is no longer read.
WATCH_SECONDS = 10.0
# Jobs read per refresh at most; polls of the rest query the store themselves.
MAX_WATCHED = 10_000


@dataclass(slots=True)
class _Copy:
    read_at: float  # when the read that returned it began
    summary: JobSummary
    polled_at: float


class StatusSnapshot:
    """Recent reads of ongoing jobs, refreshed together; see the module docstring."""

    def __init__(
        self,
        store: JobStore,
        refresh: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._refresh = refresh
        # One refresh may be late or fail; past two, polls read the store themselves.
        self._max_age = 2 * refresh
        self._clock = clock
        self._copies: dict[int, _Copy] = {}
        # When a cancel through this process last changed the job: a read begun
        # earlier may predate the change, and is not kept.
        self._changed: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._refresh_periodically(), name="status-snapshot")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def summary(self, job_id: int) -> JobSummary | None:
        """The job's summary: the copy if it is ongoing and recent, otherwise the store's."""
        now = self._clock()
        copy = self._copies.get(job_id)
        if copy is not None and now - copy.read_at <= self._max_age:
            copy.polled_at = now
            return copy.summary
        found = await self._store.summary(job_id)
        self._keep(job_id, now, found)
        if (kept := self._copies.get(job_id)) is not None:
            kept.polled_at = now
        return found

    def forget(self, job_id: int) -> None:
        """This process changed the job (a cancel): read it afresh at the next poll."""
        self._copies.pop(job_id, None)
        self._changed[job_id] = self._clock()

    async def refresh(self) -> None:
        """Read every job polled within ``WATCH_SECONDS`` that was last seen ongoing."""
        now = self._clock()
        for job_id, copy in list(self._copies.items()):
            if now - copy.polled_at > WATCH_SECONDS:
                del self._copies[job_id]
        for job_id, changed in list(self._changed.items()):
            if now - changed > self._max_age:
                del self._changed[job_id]
        watched = list(self._copies)
        if not watched:
            return
        found = {summary.job_id: summary for summary in await self._store.summaries(watched)}
        for job_id in watched:
            self._keep(job_id, now, found.get(job_id))

    def _keep(self, job_id: int, read_at: float, found: JobSummary | None) -> None:
        held = self._copies.get(job_id)
        if held is not None and held.read_at > read_at:
            return  # a later read is already held
        if read_at <= self._changed.get(job_id, float("-inf")):
            return  # the read may predate this process's own change
        if found is None or found.status is not JobStatus.ONGOING:
            self._copies.pop(job_id, None)
        elif held is not None:
            held.read_at, held.summary = read_at, found
        elif len(self._copies) < MAX_WATCHED:
            self._copies[job_id] = _Copy(read_at, found, polled_at=read_at)

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.refresh()
            except StoreUnavailable as exc:
                # The copies age past their limit, and polls read the store: a 503 while
                # it is down, as without the snapshot.
                log.debug("status snapshot not refreshed: %s", exc)
            except Exception:
                log.exception("status snapshot not refreshed")
