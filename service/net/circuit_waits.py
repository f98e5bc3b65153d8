"""Images an open circuit turned away, parked per origin until it may let them through.

A parked image holds no worker and no bytes: only a callback that hands it back
to the work queue waits here. Each origin's waiters sit in a heap by deadline
with one timer for the origin, so thousands of images cost a heap entry each.
They are woken all together when the circuit closes, one (the longest waiting)
when it wants a probe, and each at its own deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from service.net.circuit_breaker import CircuitBreaker, CircuitState

__all__ = ["WAKE_BATCH", "CircuitWaits"]

# Waiters handed back per loop turn when a circuit closes, so that waking
# thousands does not stall the event loop.
WAKE_BATCH = 1000

# (deadline on the breaker's clock, arrival order, wake); wake answers whether the
# image was taken back (False: its job ended meanwhile).
_Waiter = tuple[float, int, Callable[[], bool]]


@dataclass(slots=True)
class _Origin:
    waiters: list[_Waiter] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0


class CircuitWaits:
    """Who waits on which origin's circuit; ``update`` after every verdict the breaker hears."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._origins: dict[str, _Origin] = {}
        self._arrivals = itertools.count()

    def park(self, origin: str, until: float, wake: Callable[[], bool]) -> None:
        """Call ``wake`` once, when ``origin`` may let the image through, or at ``until``."""
        entry = self._origins.get(origin)
        if entry is None:
            entry = self._origins[origin] = _Origin()
        heapq.heappush(entry.waiters, (until, next(self._arrivals), wake))
        self.update(origin)

    def update(self, origin: str) -> None:
        """Wake whom ``origin``'s circuit now lets through, and time the next wake-up."""
        entry = self._origins.get(origin)
        if entry is None:
            return
        waiters = entry.waiters
        state = self._breaker.state(origin)
        if state is CircuitState.CLOSED:
            for _ in range(min(len(waiters), WAKE_BATCH)):
                heapq.heappop(waiters)[2]()
            if waiters:
                asyncio.get_running_loop().call_soon(self.update, origin)
                return
        else:
            now = self._breaker.clock()
            while waiters and waiters[0][0] <= now:
                heapq.heappop(waiters)[2]()  # its wait is over: it fails, or probes
            if state is CircuitState.HALF_OPEN and not self._breaker.probing(origin):
                # The longest waiting goes first; a waiter whose job ended passes it on.
                while waiters and not heapq.heappop(waiters)[2]():
                    pass
        if not waiters:
            self._forget(origin, entry)
            return
        wake_at = waiters[0][0]
        probe_at = self._breaker.probe_at(origin)
        if state is CircuitState.OPEN and probe_at is not None:
            wake_at = min(wake_at, probe_at)
        self._schedule(origin, entry, wake_at)

    def _schedule(self, origin: str, entry: _Origin, when: float) -> None:
        if entry.timer is not None:
            if entry.timer_at == when:
                return
            entry.timer.cancel()
        delay = max(0.0, when - self._breaker.clock())
        entry.timer = asyncio.get_running_loop().call_later(delay, self._timer_fired, origin)
        entry.timer_at = when

    def _timer_fired(self, origin: str) -> None:
        entry = self._origins.get(origin)
        if entry is not None:
            entry.timer = None
            self.update(origin)

    def _forget(self, origin: str, entry: _Origin) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        entry.waiters.clear()
        del self._origins[origin]
