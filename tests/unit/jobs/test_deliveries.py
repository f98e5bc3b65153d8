"""Webhook deliveries in the local stores: made in the transaction that ends a job, leased
while attempted, written once per attempt, deleted with their job; and the retry schedule."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.jobs.deliveries import DeliveryOutcome, DeliveryState
from service.jobs.memory_store import MemoryJobStore
from service.jobs.model import Visit
from service.jobs.sqlite_store import SqliteJobStore
from service.jobs.store import JobStore
from service.jobs.webhooks import retry_delay
from service.outcomes import ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.store_master import Store

SHOP = Store("S1", "Shop", "7")
VISIT = Visit("S1", "t", ("http://x/0",))
HOOK = "https://hooks.example.com/rp"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[JobStore]:
    store: JobStore
    if request.param == "memory":
        store = MemoryJobStore(clock=clock, ttl=3600.0)
    else:
        store = SqliteJobStore(tmp_path / "jobs.db", ttl=3600.0, max_finished=100, clock=clock)
    await store.open()
    yield store
    await store.close()


def test_the_retry_schedule_doubles_from_the_base_up_to_the_cap() -> None:
    delays = [retry_delay(attempts, 5.0, 900.0) for attempts in range(1, 10)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 900.0]
    assert retry_delay(10_000, 5.0, 900.0) == 900.0


async def test_a_job_ending_at_creation_has_its_delivery_at_once(store: JobStore) -> None:
    created = await store.create([VISIT], [None], max_pending=10, callback_url=HOOK)
    assert created.finished is not None
    [delivery] = await store.take_deliveries(10, lease=30.0)
    assert (delivery.job_id, delivery.url, delivery.attempts) == (created.job_id, HOOK, 0)
    body = json.loads(delivery.body)
    assert body["status"] == "failed"
    assert body["error_count"] == 1
    view = await store.latest_delivery(created.job_id)
    assert view is not None
    assert (view.id, view.state, view.attempts) == (delivery.id, DeliveryState.PENDING, 0)


async def test_no_callback_url_no_delivery(store: JobStore) -> None:
    created = await store.create([VISIT], [None], max_pending=10)
    assert await store.take_deliveries(10, lease=30.0) == []
    assert await store.latest_delivery(created.job_id) is None


async def test_a_leased_delivery_is_not_taken_again_until_its_lease_runs_out(
    store: JobStore, clock: Clock
) -> None:
    created = await store.create([VISIT], [SHOP], max_pending=10, callback_url=HOOK)
    assert await store.take_deliveries(10, lease=30.0) == []  # still ongoing
    task = ImageTask(created.job_id, 0, VISIT.image_urls[0], "S1")
    await store.record([SettledImage(task, ImageOutcome.measured(3, 4))])
    [delivery] = await store.take_deliveries(10, lease=30.0)
    assert json.loads(delivery.body)["status"] == "completed"
    clock.now += 29.0
    assert await store.take_deliveries(10, lease=30.0) == []
    clock.now += 2.0
    [again] = await store.take_deliveries(10, lease=30.0)
    assert again.id == delivery.id


async def test_an_attempt_is_written_once_and_reschedules_the_delivery(
    store: JobStore, clock: Clock
) -> None:
    created = await store.create([VISIT], [None], max_pending=10, callback_url=HOOK)
    [delivery] = await store.take_deliveries(10, lease=30.0)
    failed = DeliveryOutcome(delivery.id, 0, DeliveryState.PENDING, "HTTP 500", retry_in=10.0)
    assert await store.settle_delivery(failed)
    # The same attempt written again (a taker whose lease ran out) changes nothing.
    assert not await store.settle_delivery(failed)
    view = await store.latest_delivery(created.job_id)
    assert view is not None
    assert (view.state, view.attempts, view.last_error) == (DeliveryState.PENDING, 1, "HTTP 500")
    # Not due before its retry time, though its lease ended with the attempt.
    clock.now += 9.0
    assert await store.take_deliveries(10, lease=30.0) == []
    clock.now += 2.0
    [again] = await store.take_deliveries(10, lease=30.0)
    assert again.attempts == 1
    assert await store.settle_delivery(DeliveryOutcome(again.id, 1, DeliveryState.DELIVERED, None))
    view = await store.latest_delivery(created.job_id)
    assert view is not None
    assert (view.state, view.attempts, view.last_error) == (DeliveryState.DELIVERED, 2, None)
    clock.now += 100.0
    assert await store.take_deliveries(10, lease=30.0) == []


async def test_a_cancelled_job_gets_a_delivery(store: JobStore) -> None:
    created = await store.create([VISIT], [SHOP], max_pending=10, callback_url=HOOK)
    await store.cancel(created.job_id)
    [delivery] = await store.take_deliveries(10, lease=30.0)
    assert json.loads(delivery.body)["status"] == "cancelled"


async def test_deliveries_go_with_their_job(store: JobStore, clock: Clock) -> None:
    created = await store.create([VISIT], [None], max_pending=10, callback_url=HOOK)
    clock.now += 7200.0  # past the job's time-to-live
    assert await store.sweep() == 1
    assert await store.take_deliveries(10, lease=30.0) == []
    assert await store.latest_delivery(created.job_id) is None
