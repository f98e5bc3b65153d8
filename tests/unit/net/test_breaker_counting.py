"""Who the circuit opens for: one job's failures for that job alone, many jobs' for everyone."""

from __future__ import annotations

from service.net.circuit_breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fail(breaker: CircuitBreaker, job: int, times: int = 1, *, counts: bool = True) -> None:
    for _ in range(times):
        breaker.record_failure("o", job, counts=counts)


def test_one_jobs_failures_open_the_circuit_for_that_job_alone() -> None:
    breaker = CircuitBreaker(threshold=3, cool_down=30.0, min_jobs=2, clock=Clock())
    fail(breaker, job=1, times=2)
    assert breaker.allow("o", 1)
    fail(breaker, job=1, times=23)
    assert breaker.state("o", 1) is CircuitState.OPEN
    assert not breaker.allow("o", 1)
    assert breaker.state("o", 2) is CircuitState.CLOSED
    assert breaker.allow("o", 2)
    assert breaker.state("o") is CircuitState.OPEN  # open for someone


def test_a_flood_from_one_job_and_a_blip_from_another_open_it_for_neither_other() -> None:
    # threshold 4 over 2 jobs: no job counts for more than 2 towards everyone's circuit.
    breaker = CircuitBreaker(threshold=4, cool_down=30.0, min_jobs=2, clock=Clock())
    fail(breaker, job=1, times=25)
    fail(breaker, job=2)
    assert breaker.allow("o", 2)
    assert breaker.allow("o", 3)
    assert not breaker.allow("o", 1)


def test_failures_from_enough_jobs_open_it_for_every_job() -> None:
    breaker = CircuitBreaker(threshold=4, cool_down=30.0, min_jobs=2, clock=Clock())
    fail(breaker, job=1, times=2)
    fail(breaker, job=2)
    assert breaker.allow("o", 3)
    fail(breaker, job=2)
    for job in (1, 2, 3):
        assert breaker.state("o", job) is CircuitState.OPEN
        assert not breaker.allow("o", job)


def test_a_dead_origin_opens_however_thinly_its_failures_are_spread() -> None:
    breaker = CircuitBreaker(threshold=20, cool_down=30.0, min_jobs=2, clock=Clock())
    for job in range(19):
        fail(breaker, job)
    assert breaker.allow("o", 99)
    fail(breaker, 19)
    assert not breaker.allow("o", 99)


def test_min_jobs_three_needs_three_jobs() -> None:
    breaker = CircuitBreaker(threshold=6, cool_down=30.0, min_jobs=3, clock=Clock())
    fail(breaker, job=1, times=5)
    fail(breaker, job=2, times=5)
    assert breaker.allow("o", 3)  # 2 + 2 of 6: each counts for at most 2
    fail(breaker, job=3, times=2)
    assert not breaker.allow("o", 4)


def test_min_jobs_one_lets_any_job_open_it_for_every_job() -> None:
    breaker = CircuitBreaker(threshold=3, cool_down=30.0, min_jobs=1, clock=Clock())
    fail(breaker, job=1, times=3)
    assert not breaker.allow("o", 2)


def test_a_success_for_any_job_ends_the_run_for_every_job() -> None:
    breaker = CircuitBreaker(threshold=3, cool_down=30.0, min_jobs=2, clock=Clock())
    fail(breaker, job=1, times=3)
    fail(breaker, job=2, times=2)
    assert not breaker.allow("o", 1)
    breaker.record_success("o")  # job 2's image came through
    assert breaker.allow("o", 1)
    fail(breaker, job=1, times=2)
    assert breaker.allow("o", 1)  # counting starts again from nothing
    assert breaker.allow("o", 2)


def test_uncounted_failures_neither_count_nor_end_the_run() -> None:
    breaker = CircuitBreaker(threshold=3, cool_down=30.0, min_jobs=2, clock=Clock())
    fail(breaker, job=1, times=10, counts=False)
    assert len(breaker) == 0  # nothing kept for them
    fail(breaker, job=1, times=2)
    fail(breaker, job=1, times=10, counts=False)
    assert breaker.allow("o", 1)
    fail(breaker, job=1)
    assert not breaker.allow("o", 1)


def test_a_failed_probe_reopens_even_uncounted_and_a_success_closes_for_all() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cool_down=10.0, min_jobs=2, clock=clock)
    fail(breaker, job=1, times=1)
    fail(breaker, job=2, times=1)
    assert breaker.probe_at("o") == 10.0
    clock.now = 10.0
    assert breaker.state("o") is CircuitState.HALF_OPEN
    assert breaker.allow("o", 3)  # any job's image may probe an origin open for all
    assert breaker.probing("o")
    assert not breaker.allow("o", 1)
    fail(breaker, job=3, counts=False)  # the probe was an image's retry
    assert breaker.state("o", 3) is CircuitState.OPEN
    assert breaker.probe_at("o") == 20.0
    clock.now = 20.0
    assert breaker.allow("o", 1)
    breaker.record_success("o")
    assert breaker.state("o") is CircuitState.CLOSED
    assert breaker.probe_at("o") is None


def test_the_jobs_remembered_per_origin_are_bounded() -> None:
    breaker = CircuitBreaker(threshold=5, cool_down=30.0, min_jobs=8, clock=Clock())
    for job in range(1000):
        fail(breaker, job)
    assert not breaker.allow("o", 5000)  # opened for everyone by 8 jobs
    assert len(breaker._origins["o"].failures) == 8
