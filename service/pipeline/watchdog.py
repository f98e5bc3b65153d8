"""The decode deadline: each pool worker says which image it is on and since when; who overran.

The pool makes a ``SlotTable`` with each executor and hands it to the workers
through the executor's ``initializer``; each worker claims a slot, then writes
two numbers into shared memory before each image (``WorkerSlot.begin``). The
pool's watchdog reads the table a few times a second and asks ``Watchdog`` which
workers to kill: one that has been on one image past the deadline (a slow
decoder, a hang in C code), or one stopped (SIGSTOP) for that long, which can
hold up the whole pool even while idle (it may hold the call queue's read lock).

Nothing here imports asyncio: workers import it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

__all__ = [
    "SlotTable",
    "Verdict",
    "Watchdog",
    "WorkerSlot",
    "WorkerState",
    "format_seconds",
    "is_stopped",
]

# Each slot: the worker's pid, the token of the image it is on (0 between batches),
# and the monotonic time it started that image. CLOCK_MONOTONIC is system-wide, so
# the parent can compare a worker's start with its own clock.
_PID, _TOKEN, _STARTED, _FIELDS = 0, 1, 2, 3


class SlotTable:
    """One slot per worker of one executor, in shared memory; made by the parent.

    Pickled to the workers with the executor's initargs, as multiprocessing
    allows for shared ctypes while a process is being started.
    """

    def __init__(self, context: BaseContext, size: int) -> None:
        self.size = size
        # Floats hold tokens exactly up to 2**53: centuries of images.
        self._cells: Any = context.RawArray("d", size * _FIELDS)
        # The next unclaimed slot; its lock only serialises workers starting together.
        self._claimed: Any = context.Value("i", 0)

    def claim(self, pid: int) -> WorkerSlot | None:
        """Worker side: take the next free slot; None if more workers started than there are."""
        with self._claimed.get_lock():
            index = self._claimed.value
            if index >= self.size:
                return None
            self._claimed.value = index + 1
        self._cells[index * _FIELDS + _PID] = pid
        return WorkerSlot(self._cells, index * _FIELDS)

    def states(self) -> Iterator[WorkerState]:
        """Parent side: every claimed slot, as its worker last wrote it."""
        cells = self._cells
        for base in range(0, self.size * _FIELDS, _FIELDS):
            pid = int(cells[base + _PID])
            if pid:
                # The token is read before the start time, which the worker writes
                # first (see WorkerSlot.begin): a start read here is never older
                # than its token's image, so a deadline is at worst seen a poll late.
                token = int(cells[base + _TOKEN])
                yield WorkerState(pid, token, cells[base + _STARTED])


class WorkerSlot:
    """Worker side: this worker's slot. ``begin`` is on the hot path: two stores, no lock."""

    __slots__ = ("_cells", "_started", "_token", "first_token")

    def __init__(self, cells: Any, base: int) -> None:
        self._cells = cells
        self._token = base + _TOKEN
        self._started = base + _STARTED
        # The token of the current batch's first image; image i's is first_token + i.
        self.first_token = 0

    def begin(self, index: int) -> None:
        """Image ``index`` of the current batch starts now."""
        cells = self._cells
        cells[self._started] = time.monotonic()
        cells[self._token] = self.first_token + index

    def clear(self) -> None:
        """Between batches: on no image, so never past a deadline."""
        self._cells[self._token] = 0


@dataclass(frozen=True, slots=True)
class WorkerState:
    pid: int
    token: int  # 0: between batches
    started: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """A worker to kill, and whether the image it holds is to blame."""

    pid: int
    token: int  # the image it is on; 0 for none
    # True: the image ran past the deadline on a running worker, and fails. False:
    # the worker was stopped, which is no image's doing; its image goes again.
    overran: bool


def is_stopped(pid: int) -> bool:
    """True if ``pid`` is stopped by a signal (SIGSTOP, SIGTSTP): state T in /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    # The command name may hold spaces or parentheses; the state follows the last ')'.
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"T"


class Watchdog:
    """Decides which workers of a slot table to kill; the pool does the killing."""

    def __init__(self, deadline: float, *, stopped: Callable[[int], bool] = is_stopped) -> None:
        self.deadline = deadline
        self._stopped = stopped
        # When each worker was first seen stopped.
        self._stopped_since: dict[int, float] = {}

    def inspect(self, table: SlotTable, now: float) -> list[Verdict]:
        verdicts: list[Verdict] = []
        stopped_since: dict[int, float] = {}
        for state in table.states():
            stopped = self._stopped(state.pid)
            if stopped:
                stopped_since[state.pid] = self._stopped_since.get(state.pid, now)
            overdue = state.token != 0 and now - state.started > self.deadline
            if overdue or (stopped and now - stopped_since[state.pid] > self.deadline):
                verdicts.append(Verdict(state.pid, state.token, overran=overdue and not stopped))
        # Only this table's workers, and only those still stopped, are remembered.
        self._stopped_since = stopped_since
        return verdicts


def format_seconds(seconds: float) -> str:
    """``10.0`` -> ``"10 s"``, ``2.5`` -> ``"2.5 s"``: as a person would write the limit."""
    return f"{seconds:g} s"
