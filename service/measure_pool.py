"""The process pool that measures images, fed in adaptive batches.

One image per executor call costs more in IPC than the decode itself, so
images wait here while every worker is busy and go out together: an idle pool
gets work at once, a busy one gets bigger batches.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import Future as ConcurrentFuture
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from service import imaging
from service.imaging import MeasureFailure, Measurement

__all__ = ["MeasurePool", "default_worker_count"]

log = logging.getLogger(__name__)

_Pending = tuple[bytes, "asyncio.Future[Measurement | MeasureFailure]"]


def default_worker_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class MeasurePool:
    def __init__(self, *, workers: int, verify: str, max_pixels: int, max_batch: int) -> None:
        self.workers = workers or default_worker_count()
        self._verify = verify
        self._max_pixels = max_pixels
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._outstanding = 0
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        # forkserver: forking the service itself would copy its event loop, sockets
        # and resolver threads (and any lock they hold) into every worker.
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=imaging.init_worker,
        )

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def ping(self) -> bool:
        """True once a worker answers; used at startup to warm the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, imaging.ping)

    async def measure(self, data: bytes) -> Measurement | MeasureFailure:
        future: asyncio.Future[Measurement | MeasureFailure] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.append((data, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending and self._outstanding < self.workers:
            taken = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            # A waiter cancelled meanwhile (shutdown, job dropped) needs no work.
            batch = [(data, future) for data, future in taken if not future.done()]
            if not batch:
                continue
            self._outstanding += 1
            call = self._executor.submit(
                imaging.measure_batch, [data for data, _ in batch], self._verify, self._max_pixels
            )
            waiters = [future for _, future in batch]
            del batch, taken  # the bytes now belong to the call alone
            call.add_done_callback(partial(self._settle_threadsafe, loop, waiters))

    def _settle_threadsafe(
        self,
        loop: asyncio.AbstractEventLoop,
        waiters: list[asyncio.Future[Measurement | MeasureFailure]],
        call: ConcurrentFuture[list[Measurement | MeasureFailure]],
    ) -> None:
        # Runs in the executor's thread: hop back onto the loop.
        loop.call_soon_threadsafe(self._settle, waiters, call)

    def _settle(
        self,
        waiters: list[asyncio.Future[Measurement | MeasureFailure]],
        call: ConcurrentFuture[list[Measurement | MeasureFailure]],
    ) -> None:
        self._outstanding -= 1
        error = call.exception()
        if error is not None:
            log.error("measure batch failed: %r", error)
            results: list[Measurement | MeasureFailure] = [
                MeasureFailure(f"image processing failed: {error!r}")
            ] * len(waiters)
        else:
            results = call.result()
        for future, result in zip(waiters, results, strict=True):
            if not future.done():
                future.set_result(result)
        self._dispatch()

    async def close(self) -> None:
        """Cancel waiting images and stop the workers; no process outlives this."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        # shutdown(wait=True) joins the worker processes; off the loop, it may take a batch's time.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
