"""Per-origin circuit breaker: stop sending work to a server that keeps failing, then probe it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    # The run: failures since the origin last answered well, per job that had them.
    failures: dict[int, int] = field(default_factory=dict)
    opened_at: float | None = None
    # Open for every job, or only for the jobs whose own failures reached the threshold.
    everyone: bool = False
    probing: bool = False


class CircuitBreaker:
    """Counts failures per origin (any string key; see ``origin_key``), and who had them.

    A run is the failures since the origin last answered well; any success ends it.
    A job whose own failures in the run reach ``threshold`` has the circuit opened
    for it alone. It opens for every job once the run holds ``threshold`` failures
    from at least ``min_jobs`` jobs, each job counting for at most
    ``ceil(threshold / min_jobs)`` of them: one client's failing URLs cannot decide
    for the others, and a dead origin still opens however its failures are spread.

    An open circuit refuses (``allow`` answers False) for ``cool_down`` seconds.
    Then one refused caller is let through as a probe (half-open) while the others
    still are refused; the probe's success closes the circuit, its failure opens it
    for another cool-down. Origins are independent, and only failing ones have an
    entry: at most ``max_origins``, each remembering at most ``max(threshold, min_jobs)``
    jobs.
    """

    def __init__(
        self,
        threshold: int,
        cool_down: float,
        *,
        min_jobs: int = 1,
        clock: Callable[[], float] = time.monotonic,
        max_origins: int = 10_000,
    ) -> None:
        self._threshold = threshold
        self._cool_down = cool_down
        self._min_jobs = min_jobs
        self._share = math.ceil(threshold / min_jobs)
        # More jobs than this in a run would have opened the circuit for every job.
        self._max_jobs = max(threshold, min_jobs)
        self.clock = clock
        self._max_origins = max_origins
        self._origins: dict[str, _Origin] = {}

    def __len__(self) -> int:
        return len(self._origins)

    def _blocks(self, entry: _Origin, job: int | None) -> bool:
        """Whether ``entry``'s circuit covers ``job`` (None: whether it is open for anyone)."""
        if entry.opened_at is None:
            return False
        return job is None or entry.everyone or entry.failures.get(job, 0) >= self._threshold

    def state(self, origin: str, job: int | None = None) -> CircuitState:
        """The circuit as ``job`` meets it; without a job, whether it is open for anyone."""
        entry = self._origins.get(origin)
        if entry is None or not self._blocks(entry, job):
            return CircuitState.CLOSED
        assert entry.opened_at is not None
        if entry.probing or self.clock() - entry.opened_at >= self._cool_down:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def probing(self, origin: str) -> bool:
        """Whether a probe is out, its verdict not yet in."""
        entry = self._origins.get(origin)
        return entry is not None and entry.probing

    def probe_at(self, origin: str) -> float | None:
        """When the open circuit lets a probe through (``clock`` time); None if closed."""
        entry = self._origins.get(origin)
        if entry is None or entry.opened_at is None:
            return None
        return entry.opened_at + self._cool_down

    def allow(self, origin: str, job: int) -> bool:
        """Whether ``job``'s request to ``origin`` may go now; in half-open, as the probe."""
        state = self.state(origin, job)
        if state is not CircuitState.HALF_OPEN:
            return state is CircuitState.CLOSED
        entry = self._origins[origin]
        if entry.probing:
            return False  # one probe at a time; the rest wait for its verdict
        entry.probing = True
        return True

    def record_success(self, origin: str) -> None:
        """The origin answered well: the run ends, and its circuit closes for every job."""
        # A healthy origin needs no entry; this keeps the table bounded by failing ones.
        self._origins.pop(origin, None)

    def record_failure(self, origin: str, job: int, *, counts: bool = True) -> None:
        """A failure that says the origin is unwell; ``counts`` False: one already counted.

        An uncounted failure (an image's retry: its first failure counted) adds
        nothing to the run, but a probe's failure reopens the circuit all the same.
        """
        entry = self._origins.get(origin)
        if entry is None:
            if not counts:
                return
            if len(self._origins) >= self._max_origins:
                # Forget the oldest failing origin: clients can name endless hosts and ports.
                del self._origins[next(iter(self._origins))]
            entry = self._origins[origin] = _Origin()
        reopen = entry.probing
        if counts:
            failures = entry.failures
            if job in failures or len(failures) < self._max_jobs:
                failures[job] = failures.get(job, 0) + 1
            spread = sum(min(count, self._share) for count in failures.values())
            if spread >= self._threshold and len(failures) >= self._min_jobs:
                entry.everyone = True
                reopen = True
            elif failures.get(job, 0) >= self._threshold:
                reopen = True
        if reopen:
            entry.opened_at = self.clock()
            entry.probing = False

    def release(self, origin: str) -> None:
        """The probe ended without a verdict (e.g. cancelled): let the next caller probe."""
        entry = self._origins.get(origin)
        if entry is not None:
            entry.probing = False
