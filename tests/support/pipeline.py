"""Pieces for pipeline tests: a sink that keeps what settles, and a clock the test moves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from service.outcomes import ImageOutcome
from service.pipeline.fair_queue import FairQueue, ImageTask
from service.pipeline.flow import SettledImage

__all__ = ["CollectingSink", "ManualClock", "queue_of"]


class CollectingSink:
    """A ``SettleSink`` that keeps every report: ``batches`` as they came, ``outcomes`` by index."""

    def __init__(self) -> None:
        self.batches: list[list[SettledImage]] = []
        self.outcomes: dict[int, ImageOutcome] = {}

    def settle(self, settled: Sequence[SettledImage]) -> None:
        self.batches.append(list(settled))
        for task, outcome in settled:
            self.outcomes[task.index] = outcome


class ManualClock:
    """A ``Clock`` whose time stands still: timers are recorded, and fire when the test says."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.timers: list[tuple[float, Callable[..., object], tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Any:
        self.timers.append((when, callback, args))
        return _NoHandle()

    def fire_all(self) -> None:
        timers, self.timers = self.timers, []
        for _, callback, args in timers:
            callback(*args)


class _NoHandle:
    def cancel(self) -> None:
        pass


def queue_of(job_id: int, urls: Sequence[str]) -> FairQueue:
    """A fair queue holding one job's images, index i fetching urls[i]."""
    queue = FairQueue()
    tasks = [ImageTask(job_id, index, url) for index, url in enumerate(urls)]
    queue.add(job_id, iter(tasks), len(tasks))
    return queue
