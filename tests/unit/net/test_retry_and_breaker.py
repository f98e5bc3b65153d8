"""Retry policy and circuit breaker with an injected random source and clock."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from yarl import URL

from service.net.circuit_breaker import CircuitBreaker, CircuitState, origin_key
from service.net.retry import RetryPolicy, parse_retry_after


def ceiling_of_jitter(low: float, high: float) -> float:
    assert low == 0.0  # full jitter draws from zero
    return high


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base=0.5, cap=10.0, uniform=ceiling_of_jitter)
    assert [policy.delay(attempt) for attempt in range(1, 8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
    ]


def test_backoff_is_fully_jittered() -> None:
    draws: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        draws.append((low, high))
        return 0.123

    policy = RetryPolicy(base=1.0, cap=10.0, uniform=record)
    assert policy.delay(3) == 0.123
    assert draws == [(0.0, 4.0)]


def test_retry_after_replaces_the_backoff_but_not_the_cap() -> None:
    policy = RetryPolicy(base=0.5, cap=10.0, uniform=ceiling_of_jitter)
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=120.0) == 10.0
    assert policy.delay(1, retry_after=-5.0) == 0.0


def test_attempts_bound_the_retries() -> None:
    policy = RetryPolicy(attempts=3)
    assert [policy.should_retry(attempt) for attempt in (1, 2, 3)] == [True, True, False]
    assert not RetryPolicy(attempts=1).should_retry(1)


def test_parse_retry_after_seconds_and_dates() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("7", now=lambda: now) == 7.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=lambda: now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=lambda: now) == 0.0
    assert parse_retry_after("tomorrow", now=lambda: now) is None
    assert parse_retry_after("-3", now=lambda: now) is None
    assert parse_retry_after(None) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_consecutive_failures_per_key() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cool_down=30.0, clock=clock)
    for _ in range(2):
        breaker.record_failure("a", 1)
    assert breaker.allow("a", 1)
    breaker.record_success("a")  # the run of failures is broken
    for _ in range(2):
        breaker.record_failure("a", 1)
    assert breaker.state("a") is CircuitState.CLOSED
    breaker.record_failure("a", 1)
    assert breaker.state("a") is CircuitState.OPEN
    assert not breaker.allow("a", 1)
    assert breaker.allow("b", 1)  # other keys unaffected


def test_breaker_lets_one_probe_through_after_the_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cool_down=30.0, clock=clock)
    breaker.record_failure("a", 1)
    clock.now = 29.9
    assert not breaker.allow("a", 1)
    clock.now = 30.0
    assert breaker.state("a") is CircuitState.HALF_OPEN
    assert breaker.allow("a", 1)  # the probe
    assert not breaker.allow("a", 1)  # everyone else waits for its verdict
    breaker.record_success("a")
    assert breaker.state("a") is CircuitState.CLOSED
    assert breaker.allow("a", 1)


def test_failed_probe_reopens_for_another_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=5, cool_down=10.0, clock=clock)
    for _ in range(5):
        breaker.record_failure("a", 1)
    clock.now = 10.0
    assert breaker.allow("a", 1)
    breaker.record_failure("a", 1)  # one failure is enough in half-open
    assert breaker.state("a") is CircuitState.OPEN
    clock.now = 19.9
    assert not breaker.allow("a", 1)
    clock.now = 20.0
    assert breaker.allow("a", 1)


def test_released_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cool_down=1.0, clock=clock)
    breaker.record_failure("a", 1)
    clock.now = 1.0
    assert breaker.allow("a", 1)
    breaker.release("a")
    assert breaker.allow("a", 1)


def test_breaker_table_is_bounded() -> None:
    breaker = CircuitBreaker(threshold=5, cool_down=1.0, max_origins=3)
    for number in range(10):
        breaker.record_failure(f"host-{number}.example", 1)
    assert len(breaker) == 3


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://cdn.example.com/a.png", "http://cdn.example.com:80/b.png"),
        ("https://cdn.example.com/a.png", "https://cdn.example.com:443/b.png"),
        ("HTTP://CDN.Example.COM/a.png", "http://cdn.example.com/b.png"),
        ("http://cdn.example.com./a.png", "http://cdn.example.com/b.png"),
        ("http://[::1]:8080/a.png", "http://[0:0::1]:8080/b.png"),
    ],
)
def test_urls_of_one_origin_share_a_breaker_key(first: str, second: str) -> None:
    assert origin_key(URL(first)) == origin_key(URL(second))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://cdn.example.com/a.png", "https://cdn.example.com/a.png"),
        ("http://cdn.example.com:8081/a.png", "http://cdn.example.com/a.png"),
        ("https://cdn.example.com:8443/a.png", "https://cdn.example.com/a.png"),
        ("http://cdn.example.com/a.png", "http://img.example.com/a.png"),
    ],
)
def test_scheme_port_and_host_each_make_another_origin(first: str, second: str) -> None:
    assert origin_key(URL(first)) != origin_key(URL(second))
