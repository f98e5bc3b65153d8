"""Per-host circuit breaker: stop sending work to a host that keeps failing, then probe it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Host:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreaker:
    """Counts consecutive failures per host.

    After ``threshold`` in a row the host's circuit opens: ``allow`` answers
    False for ``cool_down`` seconds. Then one caller is let through as a probe
    (half-open) while others still get False; the probe's success closes the
    circuit, its failure opens it for another cool-down. Hosts are independent.
    """

    def __init__(
        self,
        threshold: int,
        cool_down: float,
        clock: Callable[[], float] = time.monotonic,
        max_hosts: int = 10_000,
    ) -> None:
        self._threshold = threshold
        self._cool_down = cool_down
        self._clock = clock
        self._max_hosts = max_hosts
        self._hosts: dict[str, _Host] = {}

    def __len__(self) -> int:
        return len(self._hosts)

    def state(self, host: str) -> CircuitState:
        entry = self._hosts.get(host)
        if entry is None or entry.opened_at is None:
            return CircuitState.CLOSED
        if entry.probing or self._clock() - entry.opened_at >= self._cool_down:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allow(self, host: str) -> bool:
        """Whether a request to ``host`` may go ahead now; a True in half-open is the probe."""
        entry = self._hosts.get(host)
        if entry is None or entry.opened_at is None:
            return True
        if entry.probing or self._clock() - entry.opened_at < self._cool_down:
            return False
        entry.probing = True
        return True

    def record_success(self, host: str) -> None:
        # A healthy host needs no entry; this keeps the table bounded by failing hosts.
        self._hosts.pop(host, None)

    def record_failure(self, host: str) -> None:
        entry = self._hosts.get(host)
        if entry is None:
            if len(self._hosts) >= self._max_hosts:
                # Forget the oldest failing host: clients can name endless hosts.
                del self._hosts[next(iter(self._hosts))]
            entry = self._hosts[host] = _Host()
        entry.failures += 1
        if entry.probing or entry.failures >= self._threshold:
            entry.opened_at = self._clock()
            entry.probing = False

    def release(self, host: str) -> None:
        """The probe ended without a verdict (e.g. cancelled): let the next caller probe."""
        entry = self._hosts.get(host)
        if entry is not None:
            entry.probing = False
