"""The per-image flow: download -> measure (batched to the pool) -> simulated GPU wait -> settle.

A fixed set of ``max_in_flight`` worker coroutines takes images from a
``WorkSource`` (the fair queue). The GPU wait is a timer, not a task: it holds
no worker, no pool process and no image bytes. Waits end on a 10 ms grid (never
outside the configured range), so the images due at one tick share a timer and
settle together instead of one timer and one report each. An image that settles
goes to the ``SettleSink`` (the job manager) with the others of its event-loop
turn, in one call. An image an open circuit turns away is parked with the
fetcher, holding no worker either, and handed back to its job's turn when woken.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from service.config import PipelineSettings
from service.net.byte_budget import ByteBudget, ByteLease
from service.net.downloader import CircuitWait, FetchError, RetryLater
from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.fair_queue import ImageTask, WorkSource
from service.url_credentials import mask_credentials

__all__ = [
    "GPU_WAIT_TICK",
    "Clock",
    "Fetcher",
    "Measurer",
    "Pipeline",
    "SettleSink",
    "SettledImage",
    "gpu_wait_ends",
]

log = logging.getLogger(__name__)

GPU_WAIT_TICK = 0.01  # seconds; the grid GPU waits end on


class Fetcher(Protocol):
    async def try_fetch(
        self,
        url: str,
        attempt: int = 1,
        *,
        job: int = 0,
        wait_until: float | None = None,
        lease: ByteLease | None = None,
    ) -> bytes:
        """One attempt for an image of ``job``: the bytes (``lease`` sized to them),
        ``RetryLater``, ``CircuitWait`` or ``FetchError``."""
        ...


class Measurer(Protocol):
    async def measure(self, data: bytes) -> ImageOutcome: ...


class SettledImage(NamedTuple):
    """An image whose outcome is final."""

    task: ImageTask
    outcome: ImageOutcome


class SettleSink(Protocol):
    """Where settled images go, a loop turn's worth per call (the job manager)."""

    def settle(self, settled: Sequence[SettledImage]) -> None: ...


class Clock(Protocol):
    """The loop's clock and timers; the running loop unless a test injects its own."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Any: ...


def gpu_wait_ends(now: float, delay: float, longest: float) -> float:
    """When a wait of ``delay`` from ``now`` ends: on the next tick, never past ``longest``."""
    return min(math.ceil((now + delay) / GPU_WAIT_TICK) * GPU_WAIT_TICK, now + longest)


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        fetcher: Fetcher,
        measurer: Measurer,
        source: WorkSource,
        sink: SettleSink,
        *,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._measurer = measurer
        self._source = source
        self._sink = sink
        self._concurrency = settings.max_in_flight
        self._delay_range = (settings.gpu_delay_min, settings.gpu_delay_max)
        self._rng = rng or random.Random()
        self._clock = clock
        self.byte_budget = ByteBudget(settings.image_bytes_budget)
        self._workers: list[asyncio.Task[None]] = []
        # Loop time a GPU wait ends -> its timer and the images it releases.
        self._gpu_waits: dict[float, tuple[Any, list[SettledImage]]] = {}
        self._to_report: list[SettledImage] = []
        self._report_scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.in_flight = 0
        # Images waiting for an open circuit, parked with the fetcher.
        self.circuit_waiting = 0

    @property
    def queued_images(self) -> int:
        """Images admitted but not in flight, including those waiting out a retry backoff
        or for an open circuit."""
        return self._source.queued_images + self.circuit_waiting

    def start(self) -> None:
        if self._clock is None:
            self._clock = asyncio.get_running_loop()
        self._workers = [
            asyncio.create_task(self._work(), name=f"pipeline-worker-{number}")
            for number in range(self._concurrency)
        ]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        for timer, _ in self._gpu_waits.values():
            timer.cancel()
        self._gpu_waits.clear()

    @property
    def idle(self) -> bool:
        """Nothing in flight, waiting out the GPU delay, or about to be reported."""
        return not (self.in_flight or self._gpu_waits or self._to_report)

    async def wait_idle(self) -> None:
        """Return once ``idle``; the work source should be paused first (shutdown)."""
        while not self.idle:
            self._idle.clear()
            await self._idle.wait()

    def _maybe_idle(self) -> None:
        if self.idle:
            self._idle.set()

    # -- the workers -------------------------------------------------------

    async def _work(self) -> None:
        while True:
            task = await self._source.next()
            self.in_flight += 1
            try:
                outcome = await self._process(task)
            finally:
                self.in_flight -= 1
            if isinstance(outcome, RetryLater):
                self._source.retry_later(task.next_attempt(), outcome.delay)
                self._maybe_idle()
            elif isinstance(outcome, CircuitWait):
                # No attempt spent: the image was never sent.
                self.circuit_waiting += 1
                outcome.park(functools.partial(self._unpark, task.waiting_until(outcome.until)))
                self._maybe_idle()
            elif outcome.error is None:
                self._wait_gpu(task, outcome)
            else:
                self._settle(SettledImage(task, outcome))

    def _unpark(self, task: ImageTask) -> bool:
        self.circuit_waiting -= 1
        # Once the workers are stopped, a late wake-up has nobody to hand the image to.
        return bool(self._workers) and self._source.requeue(task)

    async def _process(self, task: ImageTask) -> ImageOutcome | RetryLater | CircuitWait:
        # The image's bytes count against the budget from download until measured.
        # (A with-block here, not a helper coroutine: every resume of a download
        # passes through each frame on the stack.)
        with self.byte_budget.lease() as lease:
            try:
                data = await self._fetcher.try_fetch(
                    task.url,
                    task.attempt,
                    job=task.job_id,
                    wait_until=task.wait_until,
                    lease=lease,
                )
                return await self._measurer.measure(data)
            except (RetryLater, CircuitWait) as later:
                return later
            except FetchError as exc:
                return ImageOutcome.failed(exc.reason, exc.kind)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this worker is being stopped
                # Something else cancelled the awaited future (the pool closing under
                # us): that costs this image, not the worker that would serve the rest.
                return ImageOutcome.failed("image processing was cancelled", FailureKind.INTERNAL)
            except Exception as exc:
                # A bug must cost one image, never a worker.
                log.exception("unexpected error processing %s", mask_credentials(task.url))
                return ImageOutcome.failed(
                    f"internal error: {type(exc).__name__}", FailureKind.INTERNAL
                )

    # -- the simulated GPU wait and the report ----------------------------------

    def _wait_gpu(self, task: ImageTask, outcome: ImageOutcome) -> None:
        low, high = self._delay_range
        delay = self._rng.uniform(low, high)
        if delay <= 0:
            self._settle(SettledImage(task, outcome))
            return
        clock = self._clock
        assert clock is not None, "Pipeline.start() sets the clock"
        ends = gpu_wait_ends(clock.time(), delay, high)
        waiting = self._gpu_waits.get(ends)
        if waiting is None:
            timer = clock.call_at(ends, self._gpu_wait_over, ends)
            waiting = self._gpu_waits[ends] = (timer, [])
        waiting[1].append(SettledImage(task, outcome))

    def _gpu_wait_over(self, ends: float) -> None:
        _, images = self._gpu_waits.pop(ends)
        for image in images:
            self._settle(image)

    def _settle(self, image: SettledImage) -> None:
        self._to_report.append(image)
        if not self._report_scheduled:
            self._report_scheduled = True
            asyncio.get_running_loop().call_soon(self._report)

    def _report(self) -> None:
        self._report_scheduled = False
        settled, self._to_report = self._to_report, []
        self._sink.settle(settled)
        self._maybe_idle()
