"""The dashboard's figures: 5-second buckets, and the sum over replicas that never dips."""

from __future__ import annotations

from service.jobs.stats import (
    BUCKET_SECONDS,
    STALE_AFTER,
    WINDOW_BUCKETS,
    ReplicaStats,
    ThroughputMeter,
    combine,
)

START = 1_800_000_000.0  # a bucket boundary


class Clock:
    def __init__(self) -> None:
        self.now = START + 1

    def __call__(self) -> float:
        return self.now


def test_meter_counts_images_per_bucket_over_five_minutes() -> None:
    clock = Clock()
    meter = ThroughputMeter(clock)
    meter.record(3, {})
    meter.record(2, {"timeout": 2})
    clock.now += BUCKET_SECONDS
    meter.record(7, {"timeout": 1, "fetch": 1})
    taken = meter.snapshot()
    # The bucket under way (7 images) is not in the series; its failures are.
    assert taken.end == START + BUCKET_SECONDS
    assert len(taken.series) == WINDOW_BUCKETS
    assert taken.series[-1] == 5 and sum(taken.series) == 5
    assert taken.failures == {"timeout": 3, "fetch": 1}
    clock.now += BUCKET_SECONDS
    assert meter.snapshot().series[-2:] == (5, 7)
    # Five minutes on, both buckets have left the window, and the meter forgot them.
    clock.now += WINDOW_BUCKETS * BUCKET_SECONDS
    meter.record(1, {})
    taken = meter.snapshot()
    assert sum(taken.series) == 0 and taken.failures == {}
    assert len(meter._buckets) == 1


def _replica(end: float, last: list[int], **gauges: int) -> ReplicaStats:
    series = (0,) * (WINDOW_BUCKETS - len(last)) + tuple(last)
    return ReplicaStats(
        end,
        series,
        gauges.get("in_flight", 0),
        gauges.get("queued", 0),
        {"timeout": gauges.get("timeouts", 0)},
        gauges.get("age", 0),
    )


def test_combine_lines_up_buckets_and_ends_where_every_fresh_replica_has_written() -> None:
    # a has written the bucket that ended at START; b, a bucket later, not yet.
    a = _replica(START, [10, 20], in_flight=3, queued=1, timeouts=2)
    b = _replica(START - BUCKET_SECONDS, [5, 5], in_flight=4, queued=2, timeouts=1)
    series, in_flight, queued, failures = combine([a, b], START + 2)
    assert len(series) == WINDOW_BUCKETS
    assert series[-1][0] == START - BUCKET_SECONDS  # not START: b has not written it
    # Bucket ending START - 10: b's 5; START - 5: a's 10 and b's 5.
    assert [rate for _, rate in series[-2:]] == [1.0, 3.0]
    assert (in_flight, queued, failures) == (7, 3, {"timeout": 3})
    # Once b writes, the edge moves on and a's 20 shows.
    b_later = _replica(START, [5, 5, 0])
    series, *_ = combine([a, b_later], START + 6)
    assert series[-1] == (START, 4.0)


def test_a_silent_replica_keeps_its_history_but_not_its_gauges() -> None:
    live = _replica(START, [10], in_flight=1)
    silent = _replica(START - 4 * BUCKET_SECONDS, [50], in_flight=9, age=STALE_AFTER + 1)
    series, in_flight, _, _ = combine([live, silent], START + 1)
    assert series[-1] == (START, 2.0)
    assert series[-5] == (START - 4 * BUCKET_SECONDS, 10.0)
    assert in_flight == 1


def test_with_no_figures_the_chart_is_flat_up_to_now() -> None:
    series, in_flight, queued, failures = combine([], START + 3)
    assert series[-1] == (START, 0.0)
    assert len(series) == WINDOW_BUCKETS
    assert (in_flight, queued, failures) == (0, 0, {})
