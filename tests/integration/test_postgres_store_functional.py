"""The PostgreSQL job store against a real server: claims, tokens, takeover, fairness, retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from service.config import Settings
from service.errors import Overloaded, StoreFull
from service.jobs.deliveries import DeliveryOutcome, DeliveryState
from service.jobs.model import JobStatus, Visit, estimated_bytes
from service.jobs.postgres_store import PostgresJobStore
from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.fair_queue import ImageTask
from service.pipeline.flow import SettledImage
from service.replica import Replica
from service.store_master import Store

pytestmark = pytest.mark.postgres

SHOP = Store("S1", "Shop", "7")
MEASURED = ImageOutcome.measured(3, 4)

StoreFactory = Callable[..., Any]


def visit(count: int, store_id: str = "S1", start: int = 0) -> Visit:
    return Visit(store_id, "t", tuple(f"http://h/{store_id}/{n}" for n in range(start, count)))


@pytest.fixture
async def open_store(postgres_url: str) -> AsyncIterator[StoreFactory]:
    opened: list[PostgresJobStore] = []

    async def make(**overrides: Any) -> PostgresJobStore:
        settings = Settings(database_url=postgres_url, **overrides).store
        store = PostgresJobStore(postgres_url, settings, Replica())
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def settle(tasks: list[ImageTask], outcome: ImageOutcome = MEASURED) -> list[SettledImage]:
    return [SettledImage(task, outcome) for task in tasks]


async def test_a_job_is_claimed_recorded_and_finished_once(open_store: StoreFactory) -> None:
    store = await open_store()
    created = await store.create([visit(3)], [SHOP], max_pending=100)
    tasks = await store.claim(10)
    assert [(task.job_id, task.index) for task in tasks] == [(created.job_id, i) for i in range(3)]
    assert {task.store_id for task in tasks} == {"S1"}
    assert await store.claim(10) == []  # claimed already: nobody else gets them
    first = await store.record(settle(tasks[:2]))
    assert len(first.accepted) == 2 and first.finished == []
    again = await store.record(settle(tasks))  # two repeats and the last image
    assert [image.task.index for image in again.accepted] == [2]
    assert [summary.status for summary in again.finished] == [JobStatus.COMPLETED]
    summary = await store.summary(created.job_id)
    assert summary is not None
    assert (summary.done, summary.failed, summary.total) == (3, 0, 3)
    found = await store.rows(created.job_id, 1, 5)
    assert found is not None
    assert [row.perimeter for row in found[1]] == [14, 14]


async def test_error_list_names_each_store_s_first_failure_in_submission_order(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    visits = [visit(2, "S1"), visit(1, "GHOST"), visit(2, "S2")]
    created = await store.create(visits, [SHOP, None, Store("S2", "Kiosk", "8")], max_pending=100)
    tasks = {task.index: task for task in await store.claim(10)}
    failure = ImageOutcome.failed("HTTP 404", FailureKind.HTTP_STATUS)
    # S1's second image fails first, then its first; S2's first fails.
    await store.record(settle([tasks[1]], failure))
    await store.record(settle([tasks[0]], failure) + settle([tasks[3]], failure))
    recorded = await store.record(settle([tasks[4]]))
    (summary,) = recorded.finished
    assert summary.status is JobStatus.FAILED
    assert [(error.store_id, error.error) for error in summary.errors] == [
        ("S1", "image http://h/S1/0 failed: HTTP 404 (and 1 more failed images of this store)"),
        ("GHOST", "store_id 'GHOST' not found in store master"),
        ("S2", "image http://h/S2/0 failed: HTTP 404"),
    ]
    assert (summary.done, summary.failed) == (5, 4)
    assert created.unknown_stores == {"GHOST": 1}


async def test_a_small_job_is_claimed_ahead_of_a_big_one(open_store: StoreFactory) -> None:
    store = await open_store()
    big = await store.create([visit(200)], [SHOP], max_pending=1000)
    await store.claim(50)  # the big job is under way
    small = await store.create([visit(3)], [SHOP], max_pending=1000)
    next_claim = await store.claim(10)
    assert [task.job_id for task in next_claim[:3]] == [small.job_id] * 3
    assert {task.job_id for task in next_claim[3:]} == {big.job_id}


async def test_two_replicas_claiming_at_once_never_share_an_image(
    open_store: StoreFactory,
) -> None:
    first, second = await open_store(), await open_store()
    await first.create([visit(300)], [SHOP], max_pending=1000)
    claims = await asyncio.gather(*(store.claim(7) for store in [first, second] * 20))
    taken = [(task.job_id, task.index) for batch in claims for task in batch]
    assert len(taken) == len(set(taken)) == 280


async def test_a_result_under_a_claim_taken_over_is_ignored(open_store: StoreFactory) -> None:
    dead = await open_store(claim_timeout=0.3)
    alive = await open_store(claim_timeout=0.3)
    created = await dead.create([visit(2)], [SHOP], max_pending=100)
    stale = await dead.claim(10)
    await asyncio.sleep(0.5)  # the first replica stops heartbeating
    assert await alive.heartbeat() == 2
    fresh = await alive.claim(10)
    assert {task.index for task in fresh} == {0, 1}
    assert {task.claim for task in fresh}.isdisjoint({task.claim for task in stale})
    late = await dead.record(settle(stale, ImageOutcome.measured(1, 1)))
    assert late.accepted == []  # settled once, by whoever holds the claim now
    recorded = await alive.record(settle(fresh))
    assert [summary.job_id for summary in recorded.finished] == [created.job_id]
    found = await alive.rows(created.job_id, 0, 10)
    assert found is not None
    assert {row.perimeter for row in found[1]} == {14}


async def test_a_live_replica_keeps_its_claims_however_long_an_image_takes(
    open_store: StoreFactory,
) -> None:
    slow = await open_store(claim_timeout=0.3)
    other = await open_store(claim_timeout=0.3)
    await slow.create([visit(1)], [SHOP], max_pending=100)
    held = await slow.claim(10)
    for _ in range(4):  # well past claim_timeout, heartbeating all along
        await asyncio.sleep(0.15)
        await slow.heartbeat()
        assert await other.heartbeat() == 0
    assert await other.claim(10) == []
    assert len((await slow.record(settle(held))).accepted) == 1


async def test_released_claims_go_back_to_the_queue(open_store: StoreFactory) -> None:
    leaving, staying = await open_store(), await open_store()
    await leaving.create([visit(4)], [SHOP], max_pending=100)
    assert len(await leaving.claim(10)) == 4
    assert await leaving.release_claims() == 4
    assert len(await staying.claim(10)) == 4


async def test_admission_counts_pending_images_across_the_store(
    open_store: StoreFactory,
) -> None:
    first, second = await open_store(), await open_store()
    await first.create([visit(6)], [SHOP], max_pending=10)
    with pytest.raises(Overloaded) as refused:
        await second.create([visit(5)], [SHOP], max_pending=10)
    assert "6 images pending, this job adds 5, the limit is 10" in refused.value.message
    results = await asyncio.gather(
        first.create([visit(3)], [SHOP], max_pending=10),
        second.create([visit(3)], [SHOP], max_pending=10),
        return_exceptions=True,
    )
    assert sorted(type(result).__name__ for result in results) == ["CreatedJob", "Overloaded"]


async def test_ids_are_unique_across_replicas_and_never_reused(
    open_store: StoreFactory, postgres_url: str
) -> None:
    first, second = await open_store(), await open_store()
    created = await asyncio.gather(
        *(store.create([visit(1)], [SHOP], max_pending=1000) for store in [first, second] * 10)
    )
    ids = [job.job_id for job in created]
    assert len(set(ids)) == 20
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("DELETE FROM images; DELETE FROM visits; DELETE FROM jobs")
    finally:
        await connection.close()
    later = await first.create([visit(1)], [SHOP], max_pending=1000)
    assert later.job_id > max(ids)


async def test_finished_jobs_past_their_ttl_or_the_count_are_deleted(
    open_store: StoreFactory, postgres_url: str
) -> None:
    store = await open_store(job_ttl=3600.0, max_finished_jobs=2)
    finished = []
    for _ in range(4):
        created = await store.create([visit(1)], [SHOP], max_pending=100)
        await store.record(settle(await store.claim(10)))
        finished.append(created.job_id)
    ongoing = await store.create([visit(1)], [SHOP], max_pending=100)
    # The oldest finished job is also past its time-to-live, on the database's clock.
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(
            "UPDATE jobs SET finished_at = finished_at - 7200 WHERE id = $1", finished[0]
        )
    finally:
        await connection.close()
    assert await store.summary(finished[0]) is None  # gone on read, before any sweep
    assert await store.sweep() == 2
    assert [job.job_id for job in await store.recent(10)] == [ongoing.job_id, *finished[:1:-1]]


async def test_a_schema_newer_than_the_code_is_refused(
    open_store: StoreFactory, postgres_url: str
) -> None:
    await open_store()
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("INSERT INTO schema_version (version) VALUES (999)")
    finally:
        await connection.close()
    with pytest.raises(Exception, match="schema is version 999, newer than this code knows"):
        await open_store()


async def test_max_database_bytes_deletes_old_finished_jobs_then_refuses(
    open_store: StoreFactory,
) -> None:
    size = estimated_bytes([visit(1)])
    store = await open_store(max_database_bytes=3 * size)
    ids = []
    for _ in range(5):
        created = await store.create([visit(1)], [SHOP], max_pending=100)
        await store.record(settle(await store.claim(10)))
        ids.append(created.job_id)
    assert [job.job_id for job in await store.recent(10)] == ids[:-4:-1]
    for _ in range(3):
        await store.create([visit(1)], [SHOP], max_pending=100)
    with pytest.raises(StoreFull, match="job store is full"):
        await store.create([visit(1)], [SHOP], max_pending=100)


async def test_retry_starts_a_new_run_that_ignores_the_last_run_s_late_results(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    created = await store.create([visit(2)], [SHOP], max_pending=100)
    first = await store.claim(10)
    failure = ImageOutcome.failed("HTTP 503 after 3 attempts", FailureKind.HTTP_STATUS)
    recorded = await store.record(settle(first, failure))
    assert [summary.status for summary in recorded.finished] == [JobStatus.FAILED]
    reopened = await store.retry(created.job_id, max_pending=100)
    assert reopened.queued == 2
    again = await store.claim(10)
    assert {(task.index, task.epoch) for task in again} == {(0, 1), (1, 1)}
    # The first run's result, under its own claim, arrives late: it settles nothing.
    assert (await store.record(settle(first))).accepted == []
    done = await store.record(settle(again))
    (summary,) = done.finished
    assert (summary.status, summary.errors, summary.epoch) == (JobStatus.COMPLETED, (), 1)


async def test_cancel_stops_claims_and_keeps_in_flight_results(open_store: StoreFactory) -> None:
    store = await open_store()
    created = await store.create([visit(4)], [SHOP], max_pending=100)
    in_flight = await store.claim(2)
    summary = await store.cancel(created.job_id)
    assert summary.status is JobStatus.CANCELLED
    assert await store.claim(10) == []  # the queued images never start
    late = await store.record(settle(in_flight))
    assert len(late.accepted) == 2 and late.finished == []
    found = await store.rows(created.job_id, 0, 10)
    assert found is not None
    assert [row.state.value for row in found[1]] == ["measured"] * 2 + ["cancelled"] * 2
    assert await store.ended_jobs([created.job_id]) == [created.job_id]


async def test_a_delivery_is_taken_by_one_replica_until_its_lease_runs_out(
    open_store: StoreFactory,
) -> None:
    first, second = await open_store(), await open_store()
    hook = "https://hooks.example.com/rp"
    jobs = [
        (await first.create([visit(1)], [None], max_pending=100, callback_url=hook)).job_id
        for _ in range(20)
    ]
    taken = await asyncio.gather(*(store.take_deliveries(3, 0.4) for store in [first, second] * 5))
    ids = [delivery.id for batch in taken for delivery in batch]
    assert len(ids) == len(set(ids)) == 20  # SKIP LOCKED: nobody takes one twice
    [mine] = [d for batch in taken for d in batch if d.job_id == jobs[0]]
    assert await second.take_deliveries(50, 0.4) == []  # every one is under a lease
    await asyncio.sleep(0.6)  # the takers go silent; their leases run out
    again = await second.take_deliveries(50, 30.0)
    assert len(again) == 20
    [theirs] = [d for d in again if d.job_id == jobs[0]]
    assert theirs.id == mine.id
    delivered = DeliveryOutcome(mine.id, 0, DeliveryState.DELIVERED, None)
    assert await second.settle_delivery(delivered)
    # The first taker's late outcome for the same attempt is not written over it.
    late = DeliveryOutcome(mine.id, 0, DeliveryState.PENDING, "timed out", retry_in=1.0)
    assert not await first.settle_delivery(late)
    view = await first.latest_delivery(jobs[0])
    assert view is not None
    assert (view.state, view.attempts, view.last_error) == (DeliveryState.DELIVERED, 1, None)
