"""The pipeline's work: one image as an ``ImageTask``, and the queue that takes turns between jobs.

``FairQueue`` hands out images round-robin across jobs, one image per job per
turn, so a small job is not stuck behind a big one. An image whose download
failed transiently waits out its backoff on a timer (holding no worker), then
comes back ahead of new work: it has waited already. An image handed back with
``requeue`` (after waiting for an open circuit) takes its own job's turn instead.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

__all__ = ["FairQueue", "ImageTask", "WorkSource"]


@dataclass(frozen=True, slots=True)
class ImageTask:
    """One image to process: its job, its position in the job, where to fetch it, which try.

    ``store_id`` labels log lines. ``claim`` is the token of the claim a replica holds on
    the image in a shared store (0 otherwise), and ``epoch`` the job's run it belongs to:
    a result under a stale claim, or from an earlier run of a retried job, is ignored.
    ``wait_until`` is when its wait for an open circuit ends (the fetcher's clock), once
    it has met one.
    """

    job_id: int
    index: int
    url: str
    store_id: str = ""
    claim: int = 0
    epoch: int = 0
    attempt: int = 1
    wait_until: float | None = None

    def next_attempt(self) -> ImageTask:
        return replace(self, attempt=self.attempt + 1)

    def waiting_until(self, until: float) -> ImageTask:
        return replace(self, wait_until=until)


class WorkSource(Protocol):
    """Where pipeline workers take images from."""

    @property
    def queued_images(self) -> int:
        """Images waiting to start, including those waiting out a retry backoff."""
        ...

    async def next(self) -> ImageTask:
        """The next image to start, waiting until there is one."""
        ...

    def retry_later(self, task: ImageTask, delay: float) -> None:
        """Hand ``task`` out again after ``delay`` seconds, unless its job is removed first."""
        ...

    def requeue(self, task: ImageTask) -> bool:
        """Hand ``task`` out again as its job's next image, in the job's turn; False if
        its job was removed."""
        ...

    def pause(self) -> None:
        """Hand out nothing until ``resume``."""
        ...

    def resume(self) -> None: ...


@dataclass(eq=False, slots=True)
class _JobWork:
    job_id: int
    tasks: Iterator[ImageTask]
    remaining: int
    backoffs: set[asyncio.TimerHandle] = field(default_factory=set)
    # Images handed back by ``requeue``, to go before ``tasks`` (made when first needed).
    returned: deque[ImageTask] | None = None
    # Whether it has a place in the turns (it leaves once its images are handed out).
    taking_turns: bool = False


class FairQueue:
    """A ``WorkSource`` fed by the job manager, which adds a job and removes it when it ends."""

    def __init__(self) -> None:
        self._turns: deque[_JobWork] = deque()
        # Every job added and not removed, including those whose images have all
        # been handed out but may still come back from a backoff.
        self._jobs: dict[int, _JobWork] = {}
        self._retries: deque[ImageTask] = deque()
        self._backing_off = 0
        self._paused = False
        self._wakeup = asyncio.Event()

    @property
    def queued_images(self) -> int:
        fresh = sum(work.remaining for work in self._turns)
        return fresh + len(self._retries) + self._backing_off

    def add(self, job_id: int, tasks: Iterator[ImageTask], count: int) -> None:
        """Queue ``count`` images of a job; more of a job already queued join the end."""
        work = self._jobs.get(job_id)
        if work is None:
            work = self._jobs[job_id] = _JobWork(job_id, tasks, count)
        else:
            work.tasks = itertools.chain(work.tasks, tasks)
            work.remaining += count
        if not work.taking_turns:
            work.taking_turns = True
            self._turns.append(work)
        self._wakeup.set()

    def remove(self, job_id: int) -> None:
        """Forget a job: its images that have not started, and any that come back later.

        The job manager calls this when a job ends, however it ends; until then the
        job's entry stays, so an image in flight can still come back for a retry.
        """
        work = self._jobs.pop(job_id, None)
        if work is None:
            return
        for timer in work.backoffs:
            timer.cancel()
        self._backing_off -= len(work.backoffs)
        work.backoffs.clear()
        work.remaining = 0
        work.returned = None
        self._retries = deque(task for task in self._retries if task.job_id != job_id)
        if work.taking_turns:
            work.taking_turns = False
            self._turns.remove(work)

    def retry_later(self, task: ImageTask, delay: float) -> None:
        work = self._jobs.get(task.job_id)
        if work is None:
            return
        timer: asyncio.TimerHandle

        def back() -> None:
            work.backoffs.discard(timer)
            self._backing_off -= 1
            self._retries.append(task)
            self._wakeup.set()

        timer = asyncio.get_running_loop().call_later(delay, back)
        work.backoffs.add(timer)
        self._backing_off += 1

    def job_ids(self) -> list[int]:
        """The jobs this queue holds work of."""
        return list(self._jobs)

    def requeue(self, task: ImageTask) -> bool:
        # Into the job's own turn, not ahead of every job like a retry: thousands of
        # one job's images may come back at once (a circuit closing).
        work = self._jobs.get(task.job_id)
        if work is None:
            return False
        if work.returned is None:
            work.returned = deque()
        work.returned.append(task)
        work.remaining += 1
        if not work.taking_turns:
            work.taking_turns = True
            self._turns.append(work)
        self._wakeup.set()
        return True

    def pause(self) -> None:
        """Hand out nothing until ``resume``: shutting down, or the store cannot keep up."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wakeup.set()

    async def next(self) -> ImageTask:
        while True:
            if self._paused:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._retries:
                return self._retries.popleft()
            while self._turns:
                work = self._turns[0]
                if work.returned:
                    task: ImageTask | None = work.returned.popleft()
                    if not work.returned:
                        work.returned = None
                else:
                    task = next(work.tasks, None)
                if task is None:
                    # Handed out in full: let go of the generator and what it holds.
                    work.tasks = iter(())
                    work.taking_turns = False
                    self._turns.popleft()
                    continue
                work.remaining -= 1
                self._turns.rotate(-1)
                return task
            self._wakeup.clear()
            await self._wakeup.wait()

    async def close(self) -> None:
        for work in self._jobs.values():
            for timer in work.backoffs:
                timer.cancel()
            work.backoffs.clear()
        self._backing_off = 0
