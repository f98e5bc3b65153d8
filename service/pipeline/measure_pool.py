"""The process pool that measures images, fed in adaptive batches, and rebuilt when it breaks.

One image per executor call costs more in IPC than the decode itself, so
images wait here while every worker is busy and go out together: an idle pool
gets work at once, a busy one gets bigger batches.

A worker that dies (OOM killer, a decoder crash, SIGKILL) breaks the whole
``ProcessPoolExecutor``: every outstanding call fails with ``BrokenProcessPool``.
The pool is then rebuilt and each affected image is retried once, alone, so a
poison image cannot take its batch-mates down twice; an image that crashes a
worker again fails with ``CRASHED_REASON``.

Each image gets ``decode_timeout`` from the moment its worker starts on it. A
watchdog task reads the workers' slot table (``watchdog``) a few times a second
and kills a worker past that deadline, or one stopped for that long. Killing one
worker breaks the whole executor, as a crash does; but here the watchdog knows
which image overran: that image alone fails (``FailureKind.DECODE_TIMEOUT``), and
every other image the rebuild interrupted goes back to the front of the queue
with no penalty, however often that happens to it, so one client's slow images
cannot fail another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future as ConcurrentFuture
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from service.config import PoolSettings
from service.outcomes import FailureKind, ImageOutcome
from service.pipeline import forkserver_preload, imaging, pool_worker
from service.pipeline.imaging import MeasureOptions
from service.pipeline.pool_worker import BatchFunction
from service.pipeline.watchdog import SlotTable, Verdict, Watchdog, format_seconds, is_stopped

__all__ = ["CRASHED_REASON", "BatchFunction", "MeasurePool", "default_worker_count"]

log = logging.getLogger(__name__)

CRASHED_REASON = "image processing crashed (worker process died)"
_CRASHED = ImageOutcome.failed(CRASHED_REASON, FailureKind.INTERNAL)

# The forkserver imports this so that it dies with the service (it keeps '__main__',
# multiprocessing's default preload).
_FORKSERVER_PRELOAD = ["__main__", forkserver_preload.__name__]


@dataclass(eq=False, slots=True)
class _Pending:
    data: bytes
    future: asyncio.Future[ImageOutcome]
    retried: bool = False


def default_worker_count(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota.

    ``docker run --cpus 2`` on a 32-core host leaves the affinity at 32; only the
    quota says 2, and 32 decoding workers would just thrash.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here: the affinity is the limit
    return cpus


class MeasurePool:
    def __init__(
        self,
        settings: PoolSettings,
        *,
        batch_function: BatchFunction = imaging.measure_batch,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.workers = settings.workers or default_worker_count()
        # Told each batch's size as it goes out (the batch-size metric).
        self._on_batch = on_batch
        self._niceness = settings.worker_niceness
        self._options = MeasureOptions(
            verify=settings.verify,
            max_pixels=settings.max_pixels,
            max_jpeg_scans=settings.max_jpeg_scans,
        )
        self._max_batch = settings.batch_size
        self._max_batch_bytes = settings.batch_max_bytes
        # Tests substitute a function that injects faults into real workers.
        self._batch_function = batch_function
        self._pending: deque[_Pending] = deque()
        # Images whose batch died with a worker; each goes out alone, before new work.
        self._retries: deque[_Pending] = deque()
        self._outstanding = 0
        # Bumped on every rebuild, so results from a dead executor do not count
        # against the new one's outstanding calls.
        self._generation = 0
        # Generations the watchdog broke on purpose: their images are not suspects.
        self._spared: set[int] = set()
        # Batches at the workers by the token of their first image; image i of a
        # batch has token first + i, which its worker publishes in its slot.
        self._batches: dict[int, list[_Pending]] = {}
        self._next_token = 1  # 0 means "on no image"
        self.rebuilds = 0
        self._closed = False
        # Monotonic time the pool last showed progress: a batch came back measured,
        # an image was refused at its deadline, or the pool went from idle to busy.
        # Readiness reads it instead of pinging a busy pool, where a ping would only
        # queue behind the batches.
        self.progress_at = time.monotonic()
        self._watchdog = Watchdog(settings.decode_timeout)
        self._timed_out = ImageOutcome.failed(
            f"decode took longer than {format_seconds(settings.decode_timeout)}",
            FailureKind.DECODE_TIMEOUT,
        )
        # A few looks per deadline, and never fewer than 4 a second: reading the
        # table costs microseconds, and only happens while a batch or a ping is out.
        self._watch_interval = min(0.25, settings.decode_timeout / 4)
        self._watch_task: asyncio.Task[None] | None = None
        self._pings = 0  # pings out at the workers
        # Workers of the current executor killed by the watchdog, so each is killed once.
        self._killed: set[int] = set()
        self._context = multiprocessing.get_context("forkserver")
        # Must precede the forkserver's start (the first executor's first worker). It
        # starts from the thread that submits, the event loop's, which lives as long
        # as the service: the parent-death signal follows the thread that forked.
        self._context.set_forkserver_preload(_FORKSERVER_PRELOAD)
        self._slots = SlotTable(self._context, self.workers)
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        # forkserver: forking the service itself would copy its event loop, sockets
        # and resolver threads (and any lock they hold) into every worker.
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context,
            initializer=pool_worker.init_worker,
            initargs=(self._niceness, self._slots),
        )

    @property
    def busy(self) -> bool:
        """True while a batch is out at the workers."""
        return self._outstanding > 0

    @property
    def queued(self) -> int:
        return len(self._pending) + len(self._retries)

    async def ping(self) -> bool:
        """True once a worker answers; used at startup to warm the pool, and by /readyz.

        A worker that died while the pool was idle breaks it, and nothing else
        would notice before the next batch (which a not-ready instance never
        gets), so a ping that finds the pool broken rebuilds it, once.
        """
        loop = asyncio.get_running_loop()
        generation = self._generation
        # A stopped worker can hold up a ping as it would a batch: the watchdog looks.
        self._pings += 1
        self._start_watchdog(loop)
        try:
            return await loop.run_in_executor(self._executor, imaging.ping)
        except BrokenProcessPool:
            if self._closed:
                raise
            if generation == self._generation:
                self._rebuild()
            return await loop.run_in_executor(self._executor, imaging.ping)
        finally:
            self._pings -= 1

    async def measure(self, data: bytes) -> ImageOutcome:
        future: asyncio.Future[ImageOutcome] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(data, future))
        self._dispatch()
        return await future

    def _next_batch(self) -> list[_Pending]:
        if self._retries:
            source, size = self._retries, 1
        else:
            # Several idle workers share the queue rather than one taking it all:
            # a slow image then holds up only its own share.
            idle = self.workers - self._outstanding
            source, size = self._pending, min(self._max_batch, -(-len(self._pending) // idle))
        batch: list[_Pending] = []
        batch_bytes = 0
        # The byte budget keeps one pickled call small when images are large; a
        # single image over it still goes, alone.
        while source and len(batch) < size and (not batch or batch_bytes < self._max_batch_bytes):
            item = source.popleft()
            # A waiter cancelled meanwhile (shutdown, job dropped) needs no work.
            if not item.future.done():
                batch.append(item)
                batch_bytes += len(item.data)
        return batch

    def _dispatch(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        while (self._pending or self._retries) and self._outstanding < self.workers:
            batch = self._next_batch()
            if not batch:
                continue
            first_token = self._next_token
            self._next_token += len(batch)
            try:
                call = self._submit(first_token, batch)
            except Exception as exc:
                # Whatever goes wrong, every image taken here must still get an
                # answer, or its job would stay ongoing forever.
                log.exception("cannot hand a batch to the measure pool")
                failure = ImageOutcome.failed(
                    f"image processing failed: {exc!r}", FailureKind.INTERNAL
                )
                for item in batch:
                    _resolve(item.future, failure)
                continue
            if self._outstanding == 0:
                self.progress_at = time.monotonic()
            self._outstanding += 1
            if self._on_batch is not None:
                self._on_batch(len(batch))
            self._batches[first_token] = batch
            self._start_watchdog(loop)
            # The batch (and its bytes) stays referenced until the call ends, for a
            # retry; the executor holds the same objects for as long anyway.
            call.add_done_callback(
                partial(self._batch_done_threadsafe, loop, self._generation, first_token, batch)
            )

    def _submit(
        self, first_token: int, batch: list[_Pending]
    ) -> ConcurrentFuture[list[ImageOutcome]]:
        call = partial(
            pool_worker.run_batch,
            self._batch_function,
            first_token,
            [item.data for item in batch],
            self._options,
        )
        try:
            return self._executor.submit(call)
        except BrokenProcessPool:
            # The pool broke between our last result and now: start afresh, once.
            self._rebuild()
            return self._executor.submit(call)

    def _rebuild(self) -> None:
        broken = self._executor
        if self._generation in self._spared:
            log.warning("measure pool rebuilt after its watchdog killed a worker")
        else:
            log.error("measure pool broke (a worker process died); starting a new one")
        self._generation += 1
        self._outstanding = 0
        self.rebuilds += 1
        # The old generation's batches end through their own callbacks.
        self._batches = {}
        self._killed = set()
        self._spared = {number for number in self._spared if number >= self._generation - 2}
        self._slots = SlotTable(self._context, self.workers)
        self._executor = self._new_executor()
        _kill_survivors(broken)
        broken.shutdown(wait=False, cancel_futures=True)

    def _start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._watch_task is None:
            self._watch_task = loop.create_task(self._watch(), name="measure pool watchdog")

    async def _watch(self) -> None:
        """Kill the workers the watchdog finds past the deadline or stopped; runs until close."""
        while True:
            await asyncio.sleep(self._watch_interval)
            # An idle pool is left alone: nothing waits on it.
            if not (self._outstanding or self._pings) or self._closed:
                continue
            try:
                verdicts = self._watchdog.inspect(self._slots, time.monotonic())
                if verdicts:
                    self._enforce(verdicts)
            except Exception:
                # A watchdog that stopped would leave every deadline unenforced.
                log.exception("measure pool watchdog failed; it goes on")

    def _enforce(self, verdicts: Iterable[Verdict]) -> None:
        processes = self._executor._processes or {}
        for verdict in verdicts:
            process = processes.get(verdict.pid)
            if process is None or verdict.pid in self._killed:
                continue  # not this executor's, or dead and not yet noticed by it
            self._killed.add(verdict.pid)
            item = self._holding(verdict.token)
            if verdict.overran:
                log.warning(
                    "image decode ran past decode_timeout; killing its pool worker",
                    extra={"pid": verdict.pid, "decode_timeout": self._watchdog.deadline},
                )
                if item is not None:
                    _resolve(item.future, self._timed_out)
                self.progress_at = time.monotonic()
            else:
                log.warning(
                    "pool worker stopped (SIGSTOP?) past decode_timeout; killing it",
                    extra={"pid": verdict.pid, "decode_timeout": self._watchdog.deadline},
                )
            # The executor breaks as for a crash, and _after_crash rebuilds it;
            # nothing else of this generation is to blame.
            self._spared.add(self._generation)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                process.kill()

    def _holding(self, token: int) -> _Pending | None:
        """The image with this token, if its batch is still out."""
        for first, batch in self._batches.items():
            if first <= token < first + len(batch):
                return batch[token - first]
        return None

    def _batch_done_threadsafe(
        self,
        loop: asyncio.AbstractEventLoop,
        generation: int,
        first_token: int,
        batch: list[_Pending],
        call: ConcurrentFuture[list[ImageOutcome]],
    ) -> None:
        # Runs in the executor's thread: hop back onto the loop.
        # A closed loop (RuntimeError) means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._batch_done, generation, first_token, batch, call)

    def _batch_done(
        self,
        generation: int,
        first_token: int,
        batch: list[_Pending],
        call: ConcurrentFuture[list[ImageOutcome]],
    ) -> None:
        if generation == self._generation:
            self._outstanding -= 1
            self._batches.pop(first_token, None)
        if call.cancelled():
            for item in batch:
                item.future.cancel()
            return
        error = call.exception()
        if isinstance(error, BrokenProcessPool):
            self._after_crash(generation, batch)
        elif error is not None:
            # Not a crash, but the call failed as a whole (e.g. a result that would
            # not pickle): as after a crash, each image gets one more try, alone.
            log.error("measure batch failed: %r", error)
            failure = ImageOutcome.failed(
                f"image processing failed: {error!r}", FailureKind.INTERNAL
            )
            self._retry_alone(batch, failure)
        else:
            self.progress_at = time.monotonic()
            for item, result in zip(batch, call.result(), strict=True):
                _resolve(item.future, result)
        self._dispatch()

    def _after_crash(self, generation: int, batch: list[_Pending]) -> None:
        if self._closed:
            for item in batch:
                _resolve(item.future, _CRASHED)
            return
        if generation == self._generation:
            self._rebuild()
        if generation in self._spared:
            self._requeue(batch)
        else:
            self._retry_alone(batch, _CRASHED)

    def _requeue(self, batch: list[_Pending]) -> None:
        """Put back, at the front and as they were, the images a watchdog kill interrupted."""
        waiting = [item for item in batch if not item.future.done()]
        self._retries.extendleft(reversed([item for item in waiting if item.retried]))
        self._pending.extendleft(reversed([item for item in waiting if not item.retried]))

    def _retry_alone(self, batch: list[_Pending], failure: ImageOutcome) -> None:
        """Queue each image for one more try on its own; fail those already retried."""
        for item in batch:
            if item.retried:
                _resolve(item.future, failure)
            elif not item.future.done():
                item.retried = True
                self._retries.append(item)

    async def close(self) -> None:
        """Cancel waiting images and stop the workers; no process outlives this."""
        self._closed = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        for item in (*self._pending, *self._retries):
            item.future.cancel()
        self._pending.clear()
        self._retries.clear()
        _kill_survivors(self._executor)
        processes = self._executor._processes or {}
        # Nobody waits for a busy pool's results any more, and a batch of large images
        # can take longer to decode than a container's stop timeout allows. A stopped
        # worker, busy or not, would never exit, and holds SIGTERM until continued.
        if self.busy or any(is_stopped(pid) for pid in processes):
            for process in list(processes.values()):
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    process.kill()
        # Joins the workers (and the executor's threads); off the loop, as it may block.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)


def _kill_survivors(executor: ProcessPoolExecutor) -> None:
    """Kill what is left of a broken executor's workers.

    CPython 3.11 terminates the survivors when the pool breaks, but a worker
    that submit() was spawning at that moment (``_broken`` is set without the
    lock submit() holds) misses the terminate, then blocks forever on the
    call-queue lock the dead worker held, and the executor's manager thread,
    and so interpreter exit, wait on it. Everything that submits runs on the
    event loop, as does this, so every late spawn is in ``_processes`` by now.
    """
    if not getattr(executor, "_broken", False):
        return
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.kill()


def _resolve(future: asyncio.Future[ImageOutcome], result: ImageOutcome) -> None:
    if not future.done():
        future.set_result(result)
