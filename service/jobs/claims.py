"""A replica's work on a shared store: images claimed from the database into a local fair queue.

The claim loop keeps the local queue topped up: when fewer than ``low_water``
images wait here, it claims a batch (every job's first queued images first, so a
small job overtakes a big one on every replica). It sleeps until ``NOTIFY``
says there is new work, or ``poll_every`` at the latest. The heartbeat loop
tells the database this replica lives, every ``claim_timeout / 3``, and gives
back the claims of replicas that went silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterator

from service.errors import StoreUnavailable
from service.jobs.postgres_store import PostgresJobStore
from service.pipeline.fair_queue import FairQueue, ImageTask

__all__ = ["ClaimingQueue"]

log = logging.getLogger(__name__)

# Seconds between claims when nothing woke the loop (NOTIFY is the usual wake-up).
POLL_EVERY = 2.0
# Seconds to wait before claiming again after the database refused.
RETRY_EVERY = 1.0


class ClaimingQueue:
    """The pipeline's ``WorkSource`` and the manager's ``WorkQueue`` on a shared store."""

    def __init__(
        self,
        store: PostgresJobStore,
        *,
        batch: int,
        low_water: int,
        heartbeat_every: float,
        poll_every: float = POLL_EVERY,
    ) -> None:
        self._store = store
        self._local = FairQueue()
        self._batch = batch
        self._low_water = low_water
        self._heartbeat_every = heartbeat_every
        self._poll_every = poll_every
        self._wake = asyncio.Event()
        self._paused = False
        self._loops: list[asyncio.Task[None]] = []
        store.on_work = self._wake.set
        store.on_cancel = self.remove

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="claim-loop"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat-loop"),
        ]

    async def close(self) -> None:
        """Stop claiming, give back what never started, and stop the local queue."""
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        await self._local.close()
        try:
            released = await self._store.release_claims()
        except StoreUnavailable as exc:
            # Others take them over once this replica's heartbeat is stale.
            log.warning("cannot give back claims at stop", extra={"reason": exc.message})
        else:
            if released:
                log.info("gave back unstarted claims", extra={"images": released})

    # -- WorkSource: the pipeline ------------------------------------------------

    @property
    def queued_images(self) -> int:
        return self._local.queued_images

    async def next(self) -> ImageTask:
        task = await self._local.next()
        if self._local.queued_images < self._low_water:
            self._wake.set()
        return task

    def retry_later(self, task: ImageTask, delay: float) -> None:
        # The claim stays this replica's while the image waits: a live replica's
        # claims never expire.
        self._local.retry_later(task, delay)

    def requeue(self, task: ImageTask) -> bool:
        return self._local.requeue(task)

    def pause(self) -> None:
        self._paused = True
        self._local.pause()

    def resume(self) -> None:
        self._paused = False
        self._local.resume()
        self._wake.set()

    # -- WorkQueue: the job manager ------------------------------------------------

    def add(self, job_id: int, tasks: Iterator[ImageTask], count: int) -> None:
        # The job is in the database; this replica takes its share by claiming.
        self._wake.set()

    def remove(self, job_id: int) -> None:
        self._local.remove(job_id)

    # -- the loops ---------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            if not self._paused and self._local.queued_images < self._low_water:
                try:
                    claimed = await self._store.claim(self._batch)
                except StoreUnavailable as exc:
                    log.warning("cannot claim work", extra={"reason": exc.message})
                    await asyncio.sleep(RETRY_EVERY)
                    continue
                if claimed:
                    self._queue(claimed)
                    continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_every):
                    await self._wake.wait()

    def _queue(self, claimed: list[ImageTask]) -> None:
        by_job = sorted(claimed, key=lambda task: (task.job_id, task.index))
        for job_id, tasks in itertools.groupby(by_job, key=lambda task: task.job_id):
            batch = list(tasks)
            self._local.add(job_id, iter(batch), len(batch))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_every)
            try:
                await self._store.heartbeat()
                # A cancel whose notification was missed (LISTEN down) is found here.
                held = self._local.job_ids()
                if held:
                    for job_id in await self._store.ended_jobs(held):
                        self.remove(job_id)
            except StoreUnavailable as exc:
                log.warning("cannot send the heartbeat", extra={"reason": exc.message})
