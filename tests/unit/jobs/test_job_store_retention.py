"""Finished jobs are kept for a time-to-live and up to a count, then answer like unknown ones."""

from __future__ import annotations

from datetime import UTC, datetime

from service.jobs.model import ImageOutcome, Visit
from service.jobs.store import InMemoryJobStore
from service.store_master import Store

STORE = Store(store_id="S1", name="Shop", area_code="1")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _finished_job(store: InMemoryJobStore) -> int:
    job = store.create((Visit("S1", "t", ("http://x/a.jpg",)),), (STORE,))
    store.record(job.job_id, [(0, ImageOutcome.measured(1, 1))])
    store.finish(job.job_id, datetime.now(UTC))
    return job.job_id


def test_finished_job_is_forgotten_after_its_ttl() -> None:
    clock = FakeClock()
    store = InMemoryJobStore(ttl=60.0, clock=clock)
    job_id = _finished_job(store)
    clock.now += 59.9
    assert store.summary(job_id) is not None
    clock.now += 0.1
    # Gone on read even before any sweep ran, exactly like an id never issued.
    assert store.summary(job_id) is None
    assert store.rows(job_id, 0, 10) is None
    assert store.get(job_id) is None
    assert len(store) == 0


def test_sweep_frees_expired_jobs_without_reads_and_keeps_younger_ones() -> None:
    clock = FakeClock()
    store = InMemoryJobStore(ttl=60.0, clock=clock)
    old = [_finished_job(store) for _ in range(3)]
    clock.now += 30
    young = _finished_job(store)
    clock.now += 30
    assert store.sweep() == 3
    assert len(store) == 1
    assert all(store.get(job_id) is None for job_id in old)
    assert store.get(young) is not None


def test_ongoing_jobs_are_never_evicted() -> None:
    clock = FakeClock()
    store = InMemoryJobStore(ttl=1.0, max_finished=1, clock=clock)
    ongoing = store.create((Visit("S1", "t", ("http://x/a.jpg",)),), (STORE,))
    for _ in range(5):
        _finished_job(store)
    clock.now += 1000
    store.sweep()
    assert store.get(ongoing.job_id) is ongoing
    assert [job.job_id for job in store.ongoing()] == [ongoing.job_id]


def test_at_most_max_finished_jobs_are_kept_oldest_finished_first_out() -> None:
    store = InMemoryJobStore(max_finished=3, clock=FakeClock())
    ids = [_finished_job(store) for _ in range(10)]
    assert len(store) == 3
    assert store.finished_count == 3
    assert [job.job_id for job in store.recent(10)] == ids[:-4:-1]
    assert all(store.summary(job_id) is None for job_id in ids[:7])
