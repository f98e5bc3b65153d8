"""Per-origin circuit breaker: stop sending work to a server that keeps failing, then probe it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from yarl import URL

__all__ = ["CircuitBreaker", "CircuitState", "origin_key"]


def origin_key(url: URL) -> str:
    """``scheme://host:port`` of an already parsed URL, the unit the breaker counts by.

    The host name alone would let a dead server on one port open the circuit for
    a healthy one on another. ``URL.port`` fills in 80/443, so ``http://h`` and
    ``http://h:80`` share a key; the port comes last, so IPv6 colons cannot collide.
    A fully qualified ``h.`` is the same host as ``h``.
    """
    return f"{url.scheme}://{(url.host or '').lower().rstrip('.')}:{url.port}"


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Origin:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreaker:
    """Counts consecutive failures per origin (any string key; see ``origin_key``).

    After ``threshold`` in a row the origin's circuit opens: ``allow`` answers
    False for ``cool_down`` seconds. Then one caller is let through as a probe
    (half-open) while others still get False; the probe's success closes the
    circuit, its failure opens it for another cool-down. Origins are independent.
    """

    def __init__(
        self,
        threshold: int,
        cool_down: float,
        clock: Callable[[], float] = time.monotonic,
        max_origins: int = 10_000,
    ) -> None:
        self._threshold = threshold
        self._cool_down = cool_down
        self._clock = clock
        self._max_origins = max_origins
        self._origins: dict[str, _Origin] = {}

    def __len__(self) -> int:
        return len(self._origins)

    def state(self, origin: str) -> CircuitState:
        entry = self._origins.get(origin)
        if entry is None or entry.opened_at is None:
            return CircuitState.CLOSED
        if entry.probing or self._clock() - entry.opened_at >= self._cool_down:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allow(self, origin: str) -> bool:
        """Whether a request to ``origin`` may go ahead now; a True in half-open is the probe."""
        state = self.state(origin)
        if state is not CircuitState.HALF_OPEN:
            return state is CircuitState.CLOSED
        entry = self._origins[origin]
        if entry.probing:
            return False  # one probe at a time; the rest wait for its verdict
        entry.probing = True
        return True

    def record_success(self, origin: str) -> None:
        # A healthy origin needs no entry; this keeps the table bounded by failing ones.
        self._origins.pop(origin, None)

    def record_failure(self, origin: str) -> None:
        entry = self._origins.get(origin)
        if entry is None:
            if len(self._origins) >= self._max_origins:
                # Forget the oldest failing origin: clients can name endless hosts and ports.
                del self._origins[next(iter(self._origins))]
            entry = self._origins[origin] = _Origin()
        entry.failures += 1
        if entry.probing or entry.failures >= self._threshold:
            entry.opened_at = self._clock()
            entry.probing = False

    def release(self, origin: str) -> None:
        """The probe ended without a verdict (e.g. cancelled): let the next caller probe."""
        entry = self._origins.get(origin)
        if entry is not None:
            entry.probing = False
