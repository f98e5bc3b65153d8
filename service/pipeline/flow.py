"""The per-image flow: download -> measure (batched to the pool) -> simulated GPU wait -> settle.

A fixed set of ``max_in_flight`` worker coroutines pulls images from a fair
queue that takes turns between jobs, so a small job is not stuck behind a big
one. The GPU wait is a timer, not a task: it holds no worker, no pool process
and no image bytes. Waits end on a 10 ms grid (never outside the configured
range), so the images due at one tick share a timer and settle as one batch
instead of one timer and one job-manager message each. The backoff before a
download retry is a timer too: the image goes back to the queue, ahead of new
work, when it fires. Settled images are handed back to the job manager in
batches, once per event-loop turn.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from service.config import Settings
from service.jobs.model import ImageOutcome
from service.net.byte_budget import ByteBudget, ByteLease
from service.net.downloader import FetchError, RetryLater
from service.pipeline.imaging import MeasureFailure, Measurement
from service.typedefs import ImageWork, SettleCallback
from service.url_credentials import mask_credentials

__all__ = ["GPU_WAIT_TICK", "FairQueue", "Pipeline", "gpu_wait_ends"]

log = logging.getLogger(__name__)

GPU_WAIT_TICK = 0.01  # seconds; the grid GPU waits end on


class Fetcher(Protocol):
    async def try_fetch(
        self, url: str, attempt: int = 1, *, lease: ByteLease | None = None
    ) -> bytes:
        """One attempt: the bytes (``lease`` sized to them), ``RetryLater`` or ``FetchError``."""
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


# An image past the pool, waiting out its GPU time: its job, index and outcome.
_Settled = tuple[_JobWork, int, ImageOutcome]


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


def gpu_wait_ends(now: float, delay: float, longest: float) -> float:
    """When a wait of ``delay`` from ``now`` ends: on the next tick, never past ``longest``."""
    return min(math.ceil((now + delay) / GPU_WAIT_TICK) * GPU_WAIT_TICK, now + longest)


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
        self.byte_budget = ByteBudget(settings.image_bytes_budget)
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        # Loop time a GPU wait ends -> its timer and the images it releases.
        self._gpu_waits: dict[float, tuple[asyncio.TimerHandle, list[_Settled]]] = {}
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
        for timer, _ in self._gpu_waits.values():
            timer.cancel()
        self._gpu_waits.clear()

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
        # The image's bytes count against the budget from download until measured.
        # (A with-block here, not a helper coroutine: every resume of a download
        # passes through each frame on the stack.)
        with self.byte_budget.lease() as lease:
            try:
                data = await self._fetcher.try_fetch(url, attempt, lease=lease)
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
                log.exception("unexpected error processing %s", mask_credentials(url))
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
        low, high = self._delay_range
        delay = self._rng.uniform(low, high)
        if delay <= 0:
            self._settle(work, index, outcome)
            return
        loop = asyncio.get_running_loop()
        ends = gpu_wait_ends(loop.time(), delay, high)
        waiting = self._gpu_waits.get(ends)
        if waiting is None:
            timer = loop.call_at(ends, self._gpu_wait_over, ends)
            waiting = self._gpu_waits[ends] = (timer, [])
        waiting[1].append((work, index, outcome))

    def _gpu_wait_over(self, ends: float) -> None:
        _, images = self._gpu_waits.pop(ends)
        for work, index, outcome in images:
            self._settle(work, index, outcome)

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
