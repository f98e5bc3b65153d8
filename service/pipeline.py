"""The per-image flow: download -> measure (batched to the pool) -> simulated GPU wait -> settle.

A fixed set of ``max_in_flight`` worker coroutines pulls images from a fair
queue that takes turns between jobs, so a small job is not stuck behind a big
one. The GPU wait is a timer, not a task: it holds no worker, no pool process
and no image bytes. So is the backoff before a download retry: the image goes
back to the queue, ahead of new work, when its timer fires. Settled images are
handed back to the job manager in batches, once per event-loop turn.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from service.config import Settings
from service.downloader import FetchError, RetryLater
from service.imaging import MeasureFailure, Measurement
from service.jobs import ImageOutcome
from service.typedefs import ImageWork, SettleCallback

__all__ = ["FairQueue", "Pipeline"]

log = logging.getLogger(__name__)


class Fetcher(Protocol):
    async def try_fetch(self, url: str, attempt: int = 1) -> bytes:
        """One attempt: the bytes, ``RetryLater`` or ``FetchError``."""
        ...


class Measurer(Protocol):
    async def measure(self, data: bytes) -> Measurement | MeasureFailure: ...


@dataclass(eq=False, slots=True)
class _JobWork:
    job_id: int
    images: Iterator[ImageWork]
    remaining: int
    on_settled: SettleCallback
    settled: list[tuple[int, ImageOutcome]] = field(default_factory=list)
    cancelled: bool = False


class FairQueue:
    """Hands out images round-robin across jobs, one image per job per turn."""

    def __init__(self) -> None:
        self._jobs: deque[_JobWork] = deque()
        # Images whose retry backoff is over; served before new images (they waited already).
        self._retries: deque[tuple[_JobWork, ImageWork]] = deque()
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def queued_images(self) -> int:
        return sum(work.remaining for work in self._jobs) + len(self._retries)

    def add(self, work: _JobWork) -> None:
        self._jobs.append(work)
        self._wakeup.set()

    def add_retry(self, work: _JobWork, image: ImageWork) -> bool:
        """Queue an image again after its backoff; False if its job was removed meanwhile."""
        if work.cancelled:
            return False
        self._retries.append((work, image))
        self._wakeup.set()
        return True

    def remove(self, job_id: int) -> _JobWork | None:
        for work, _ in self._retries:
            if work.job_id == job_id:
                work.cancelled = True
        self._retries = deque(entry for entry in self._retries if not entry[0].cancelled)
        for work in self._jobs:
            if work.job_id == job_id:
                work.cancelled = True
                self._jobs.remove(work)
                return work
        return None

    async def next(self) -> tuple[_JobWork, ImageWork]:
        while True:
            if self._retries:
                return self._retries.popleft()
            while self._jobs:
                work = self._jobs[0]
                image = next(work.images, None)
                if image is None:
                    self._jobs.popleft()
                    continue
                work.remaining -= 1
                self._jobs.rotate(-1)
                return work, image
            self._wakeup.clear()
            await self._wakeup.wait()


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        fetcher: Fetcher,
        measurer: Measurer,
        rng: random.Random | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._measurer = measurer
        self._concurrency = settings.max_in_flight
        self._delay_range = (settings.gpu_delay_min, settings.gpu_delay_max)
        self._rng = rng or random.Random()
        self._queue = FairQueue()
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._to_flush: dict[int, _JobWork] = {}
        self._flush_scheduled = False
        self._backing_off = 0
        # (job id, image index) -> number of the next attempt, for retried images only.
        self._attempts: dict[tuple[int, int], int] = {}
        self.in_flight = 0

    @property
    def queued_images(self) -> int:
        """Images admitted but not in flight, including those waiting out a retry backoff."""
        return self._queue.queued_images + self._backing_off

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"pipeline-worker-{number}")
            for number in range(self._concurrency)
        ]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    # -- WorkSink, called by the job manager ----------------------------------

    def enqueue(
        self, job_id: int, images: Iterator[ImageWork], count: int, on_settled: SettleCallback
    ) -> None:
        self._queue.add(_JobWork(job_id, images, count, on_settled))

    def cancel(self, job_id: int) -> None:
        self._queue.remove(job_id)
        for key in [key for key in self._attempts if key[0] == job_id]:
            del self._attempts[key]

    # -- the workers -------------------------------------------------------

    async def _work(self) -> None:
        while True:
            work, (index, url) = await self._queue.next()
            attempt = self._attempts.pop((work.job_id, index), 1)
            self.in_flight += 1
            try:
                outcome = await self._process(url, attempt)
            finally:
                self.in_flight -= 1
            if isinstance(outcome, RetryLater):
                self._retry_later(work, (index, url), outcome)
            elif outcome.error is None:
                self._after_gpu_delay(work, index, outcome)
            else:
                self._settle(work, index, outcome)

    async def _process(self, url: str, attempt: int) -> ImageOutcome | RetryLater:
        try:
            data = await self._fetcher.try_fetch(url, attempt)
            result = await self._measurer.measure(data)
        except RetryLater as later:
            return later
        except FetchError as exc:
            return ImageOutcome.failed(exc.reason)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this worker is being stopped
            # Something else cancelled the awaited future (the pool closing under
            # us): that costs this image, not the worker that would serve the rest.
            return ImageOutcome.failed("image processing was cancelled")
        except Exception as exc:
            # A bug must cost one image, never a worker.
            log.exception("unexpected error processing %s", url)
            return ImageOutcome.failed(f"internal error: {type(exc).__name__}")
        if isinstance(result, MeasureFailure):
            return ImageOutcome.failed(result.reason)
        return ImageOutcome.measured(result.width, result.height)

    def _retry_later(self, work: _JobWork, image: ImageWork, later: RetryLater) -> None:
        self._backing_off += 1
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            self._backing_off -= 1
            if self._queue.add_retry(work, image):
                self._attempts[(work.job_id, image[0])] = later.attempt + 1

        timer = asyncio.get_running_loop().call_later(later.delay, fire)
        self._timers.add(timer)

    def _after_gpu_delay(self, work: _JobWork, index: int, outcome: ImageOutcome) -> None:
        delay = self._rng.uniform(*self._delay_range)
        if delay <= 0:
            self._settle(work, index, outcome)
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            self._settle(work, index, outcome)

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)

    def _settle(self, work: _JobWork, index: int, outcome: ImageOutcome) -> None:
        work.settled.append((index, outcome))
        self._to_flush[work.job_id] = work
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._to_flush = self._to_flush, {}
        for work in pending.values():
            settled: Sequence[tuple[int, ImageOutcome]] = work.settled
            work.settled = []
            work.on_settled(work.job_id, settled)
