"""The pipeline's work: one image as an ``ImageTask``, and the queue that takes turns between jobs.

``FairQueue`` hands out images round-robin across jobs, one image per job per
turn, so a small job is not stuck behind a big one. An image whose download
failed transiently waits out its backoff on a timer (holding no worker), then
comes back ahead of new work: it has waited already.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

__all__ = ["FairQueue", "ImageTask", "WorkSource"]


@dataclass(frozen=True, slots=True)
class ImageTask:
    """One image to process: its job, its position in the job, where to fetch it, which try."""

    job_id: int
    index: int
    url: str
    attempt: int = 1

    def next_attempt(self) -> ImageTask:
        return replace(self, attempt=self.attempt + 1)


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


@dataclass(eq=False, slots=True)
class _JobWork:
    job_id: int
    tasks: Iterator[ImageTask]
    remaining: int
    backoffs: set[asyncio.TimerHandle] = field(default_factory=set)


class FairQueue:
    """A ``WorkSource`` fed by the job manager, which adds a job and removes it when it ends."""

    def __init__(self) -> None:
        self._turns: deque[_JobWork] = deque()
        # Every job added and not removed, including those whose images have all
        # been handed out but may still come back from a backoff.
        self._jobs: dict[int, _JobWork] = {}
        self._retries: deque[ImageTask] = deque()
        self._backing_off = 0
        self._wakeup = asyncio.Event()

    @property
    def queued_images(self) -> int:
        fresh = sum(work.remaining for work in self._turns)
        return fresh + len(self._retries) + self._backing_off

    def add(self, job_id: int, tasks: Iterator[ImageTask], count: int) -> None:
        work = _JobWork(job_id, tasks, count)
        self._jobs[job_id] = work
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
        self._retries = deque(task for task in self._retries if task.job_id != job_id)
        if work in self._turns:
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

    async def next(self) -> ImageTask:
        while True:
            if self._retries:
                return self._retries.popleft()
            while self._turns:
                work = self._turns[0]
                task = next(work.tasks, None)
                if task is None:
                    # Handed out in full: let go of the generator and what it holds.
                    self._turns.popleft().tasks = iter(())
                    continue
                work.remaining -= 1
                self._turns.rotate(-1)
                return task
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        for work in self._jobs.values():
            for timer in work.backoffs:
                timer.cancel()
            work.backoffs.clear()
        self._backing_off = 0
