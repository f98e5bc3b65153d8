"""What runs in each pool worker around the measurement: its initializer and the batch runner.

Both are pickled by reference and called in the worker processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from service.outcomes import ImageOutcome
from service.pipeline import imaging
from service.pipeline.imaging import MeasureOptions
from service.pipeline.parent_death import die_with_parent
from service.pipeline.watchdog import SlotTable, WorkerSlot

__all__ = ["BatchFunction", "init_worker", "run_batch"]

# (images, options, starting) -> one result per image, same order. ``starting(i)``
# must be called just before image i is measured: the decode deadline counts from it.
BatchFunction = Callable[[list[bytes], MeasureOptions, Callable[[int], None]], list[ImageOutcome]]


class _Worker:
    """This worker process's state, set once by the initializer."""

    slot: WorkerSlot | None = None


def init_worker(niceness: int, slots: SlotTable) -> None:
    """The pool's initializer: die with the forkserver, set up Pillow, claim a watchdog slot."""
    # The forkserver imported forkserver_preload before forking us (the pool asks it
    # to), so the pid that module recorded is our parent's from before the fork.
    preload = sys.modules.get("service.pipeline.forkserver_preload")
    die_with_parent(getattr(preload, "FORKSERVER_PID", None))
    imaging.init_worker(niceness)
    _Worker.slot = slots.claim(os.getpid())


def _ignore(index: int) -> None:
    pass


def run_batch(
    function: BatchFunction, first_token: int, images: list[bytes], options: MeasureOptions
) -> list[ImageOutcome]:
    """Run one batch, telling the watchdog which image is being measured as it goes."""
    slot = _Worker.slot
    if slot is None:
        return function(images, options, _ignore)
    slot.first_token = first_token
    try:
        return function(images, options, slot.begin)
    finally:
        slot.clear()
