"""Figures for the dashboard's service view: images settled per second over the last five minutes,
the work in hand, and failures by kind.

Images are counted in 5-second buckets on the wall clock, so every replica's buckets line
up. A store of one process (memory, SQLite) answers from this process alone. On a shared
store each replica writes its own figures, one row rewritten every 5 seconds, and any
replica answers with the sum over the live ones: the chart is the same whichever replica
the load balancer picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from service.errors import StoreUnavailable

__all__ = [
    "BUCKET_SECONDS",
    "STALE_AFTER",
    "WINDOW_BUCKETS",
    "Gauges",
    "LocalStats",
    "MeterSnapshot",
    "ReplicaStats",
    "ServiceStats",
    "SharedStats",
    "StatsBoard",
    "StatsSource",
    "ThroughputMeter",
    "combine",
]

log = logging.getLogger(__name__)

BUCKET_SECONDS = 5
WINDOW_BUCKETS = 60  # five minutes
# A replica whose figures are older than this is left out of the gauges (its history stays).
STALE_AFTER = 3 * BUCKET_SECONDS
# Seconds after a bucket ends that its figures are written: past the boundary, so the
# bucket is complete, and soon enough for the chart's right edge.
WRITE_DELAY = 0.25


def _bucket(moment: float) -> int:
    return math.floor(moment / BUCKET_SECONDS)


@dataclass(slots=True)
class _Bucket:
    images: int = 0
    failures: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MeterSnapshot:
    """One process's figures as of ``end`` (Unix seconds, a bucket boundary)."""

    end: float
    # Images settled per bucket, oldest first; the last one ends at ``end``.
    series: tuple[int, ...]
    # Failed images by kind over the window, the bucket under way included.
    failures: dict[str, int]


class ThroughputMeter:
    """Images settled per 5-second bucket over the last five minutes, and failures by kind.

    Fed by the job manager's observer once per recorded batch, not once per image; it
    keeps at most ``WINDOW_BUCKETS + 1`` buckets.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._buckets: dict[int, _Bucket] = {}

    def record(self, images: int, failures: Mapping[str, int]) -> None:
        """``images`` settled now (failed ones included), and the failed ones by kind."""
        current = _bucket(self.clock())
        bucket = self._buckets.get(current)
        if bucket is None:
            bucket = self._buckets[current] = _Bucket()
            self._forget_before(current - WINDOW_BUCKETS)
        bucket.images += images
        for kind, count in failures.items():
            bucket.failures[kind] = bucket.failures.get(kind, 0) + count

    def _forget_before(self, oldest: int) -> None:
        for key in [key for key in self._buckets if key < oldest]:
            del self._buckets[key]

    def snapshot(self) -> MeterSnapshot:
        current = _bucket(self.clock())
        first = current - WINDOW_BUCKETS
        series = tuple(
            bucket.images if (bucket := self._buckets.get(key)) else 0
            for key in range(first, current)
        )
        failures: dict[str, int] = {}
        for key, bucket in self._buckets.items():
            if key >= first:
                for kind, count in bucket.failures.items():
                    failures[kind] = failures.get(kind, 0) + count
        return MeterSnapshot(float(current * BUCKET_SECONDS), series, failures)


class Gauges(Protocol):
    """The work in hand in this process (the pipeline)."""

    @property
    def in_flight(self) -> int: ...

    @property
    def queued_images(self) -> int: ...


class _Pending(Protocol):
    def pending_images(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """What one replica wrote: its meter's snapshot and its gauges, ``age`` seconds ago."""

    end: float
    series: tuple[int, ...]
    in_flight: int
    queued: int
    failures: dict[str, int]
    age: float = 0.0


@dataclass(frozen=True, slots=True)
class ServiceStats:
    """The service's figures: this process's, or the sum over a shared store's replicas."""

    # (end of a 5-second bucket in Unix seconds, images per second in it), oldest first.
    images_per_second: list[tuple[int, float]]
    in_flight: int
    queued: int
    pending: int
    failures_by_kind: dict[str, int]
    replicas: int


def combine(
    replicas: Sequence[ReplicaStats], now: float
) -> tuple[list[tuple[int, float]], int, int, dict[str, int]]:
    """Sum replicas' figures: the series, in flight, queued, failures by kind.

    The series ends at the oldest bucket every fresh replica has written, so the right
    edge never dips while one of them is about to write its last bucket; a replica gone
    quiet adds its history but none of its (stale) gauges.
    """
    fresh = [replica for replica in replicas if replica.age <= STALE_AFTER]
    latest = float(_bucket(now) * BUCKET_SECONDS)
    end = min(replica.end for replica in fresh) if fresh else latest
    totals = [0] * WINDOW_BUCKETS
    for replica in replicas:
        # Its bucket i ends at replica.end - (len - 1 - i) * BUCKET_SECONDS; the sum's
        # bucket p at end - (WINDOW_BUCKETS - 1 - p) * BUCKET_SECONDS.
        shift = round((replica.end - end) / BUCKET_SECONDS)
        for position in range(WINDOW_BUCKETS):
            source = position - shift + len(replica.series) - WINDOW_BUCKETS
            if 0 <= source < len(replica.series):
                totals[position] += replica.series[source]
    first = end - (WINDOW_BUCKETS - 1) * BUCKET_SECONDS
    series = [
        (int(first) + position * BUCKET_SECONDS, round(count / BUCKET_SECONDS, 2))
        for position, count in enumerate(totals)
    ]
    failures: dict[str, int] = {}
    for replica in fresh:
        for kind, count in replica.failures.items():
            failures[kind] = failures.get(kind, 0) + count
    in_flight = sum(replica.in_flight for replica in fresh)
    queued = sum(replica.queued for replica in fresh)
    return series, in_flight, queued, failures


class StatsSource(Protocol):
    """Where ``GET /api/stats`` reads the service's figures."""

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def read(self) -> ServiceStats: ...


def _snapshot(meter: ThroughputMeter, gauges: Gauges) -> ReplicaStats:
    taken = meter.snapshot()
    return ReplicaStats(
        taken.end, taken.series, gauges.in_flight, gauges.queued_images, taken.failures
    )


class LocalStats:
    """A store of one process: its figures are the service's."""

    def __init__(self, meter: ThroughputMeter, gauges: Gauges, store: _Pending) -> None:
        self._meter = meter
        self._gauges = gauges
        self._store = store

    def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def read(self) -> ServiceStats:
        series, in_flight, queued, failures = combine(
            [_snapshot(self._meter, self._gauges)], self._meter.clock()
        )
        return ServiceStats(series, in_flight, queued, self._store.pending_images(), failures, 1)


class StatsBoard(Protocol):
    """A shared store's table of replicas' figures (the PostgreSQL store)."""

    async def write_stats(self, stats: ReplicaStats) -> None:
        """Replace this replica's row."""

    async def read_stats(self) -> tuple[list[ReplicaStats], int, int]:
        """Live replicas' rows (with their age), how many replicas live, pending images."""


class SharedStats:
    """A shared store: this replica writes its figures every 5 s and reads everyone's."""

    def __init__(self, meter: ThroughputMeter, gauges: Gauges, board: StatsBoard) -> None:
        self._meter = meter
        self._gauges = gauges
        self._board = board
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_periodically(), name="stats-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def publish(self) -> None:
        """Write this replica's figures now (the loop does it every 5 s)."""
        await self._board.write_stats(_snapshot(self._meter, self._gauges))

    async def _write_periodically(self) -> None:
        while True:
            now = time.time()
            await asyncio.sleep((_bucket(now) + 1) * BUCKET_SECONDS + WRITE_DELAY - now)
            try:
                await self.publish()
            except StoreUnavailable as exc:
                # The chart lacks this replica's figures until the store is back.
                if not self._failing:
                    log.warning("cannot write this replica's stats", extra={"reason": exc.message})
                self._failing = True
            except Exception:
                # A bug costs one write, never the writer.
                log.exception("writing this replica's stats failed")
            else:
                self._failing = False

    async def read(self) -> ServiceStats:
        replicas, live, pending = await self._board.read_stats()
        series, in_flight, queued, failures = combine(replicas, self._meter.clock())
        return ServiceStats(series, in_flight, queued, pending, failures, live)
