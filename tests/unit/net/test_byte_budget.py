"""The image byte budget: waits past the limit, serves waiters in order, survives cancellation."""

from __future__ import annotations

import asyncio

import pytest

from service.net.byte_budget import ByteBudget


async def test_reservations_within_the_limit_go_at_once() -> None:
    budget = ByteBudget(100)
    assert await budget.acquire(60) == 60
    assert await budget.acquire(40) == 40
    assert (budget.in_use, budget.waiting) == (100, 0)


async def test_a_reservation_past_the_limit_waits_for_a_release() -> None:
    budget = ByteBudget(100)
    await budget.acquire(80)
    waiter = asyncio.create_task(budget.acquire(30))
    await asyncio.sleep(0)
    assert not waiter.done()
    assert budget.waiting == 1
    budget.release(80)
    assert await asyncio.wait_for(waiter, 5) == 30
    assert budget.in_use == 30


async def test_waiters_are_served_in_arrival_order() -> None:
    budget = ByteBudget(100)
    await budget.acquire(90)
    order: list[str] = []

    async def take(name: str, amount: int) -> None:
        await budget.acquire(amount)
        order.append(name)

    large = asyncio.create_task(take("large", 100))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 5))  # would fit now, but queues behind
    await asyncio.sleep(0)
    assert order == []
    budget.release(90)
    await asyncio.wait_for(large, 5)
    assert order == ["large"]
    budget.release(100)
    await asyncio.wait_for(small, 5)
    assert order == ["large", "small"]


async def test_a_cancelled_waiter_lets_those_behind_it_through() -> None:
    budget = ByteBudget(100)
    await budget.acquire(50)
    blocked = asyncio.create_task(budget.acquire(100))
    await asyncio.sleep(0)
    behind = asyncio.create_task(budget.acquire(40))
    await asyncio.sleep(0)
    assert not behind.done()
    blocked.cancel()
    assert await asyncio.wait_for(behind, 5) == 40
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert budget.in_use == 90


async def test_a_grant_that_races_a_cancel_is_given_back() -> None:
    budget = ByteBudget(100)
    await budget.acquire(100)
    waiter = asyncio.create_task(budget.acquire(70))
    await asyncio.sleep(0)
    budget.release(100)  # grants the waiter...
    waiter.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.in_use == 0


async def test_a_reservation_larger_than_the_budget_takes_all_of_it() -> None:
    budget = ByteBudget(100)
    assert await budget.acquire(500) == 100
    budget.release(100)
    assert budget.in_use == 0


async def test_a_lease_grows_shrinks_and_gives_everything_back() -> None:
    budget = ByteBudget(100)
    with budget.lease() as lease:
        await lease.reserve(70)
        await lease.reserve(40)  # already holds more: nothing to add
        assert (lease.held, budget.in_use) == (70, 70)
        lease.shrink(25)
        assert (lease.held, budget.in_use) == (25, 25)
    assert budget.in_use == 0


async def test_try_reserve_takes_room_only_when_there_is_some() -> None:
    budget = ByteBudget(100)
    first, second = budget.lease(), budget.lease()
    assert first.try_reserve(80)
    assert not second.try_reserve(30)
    assert (second.held, budget.in_use) == (0, 80)
    first.close()
    assert second.try_reserve(30)
    assert budget.in_use == 30


async def test_a_waiter_cancelled_just_before_a_release_unwinds_cleanly() -> None:
    budget = ByteBudget(100)
    await budget.acquire(100)
    waiter = asyncio.create_task(budget.acquire(50))
    await asyncio.sleep(0)
    waiter.cancel()  # its future is cancelled now, the task unwinds on its next step...
    budget.release(100)  # ...after this release has already dropped the cancelled entry
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (budget.in_use, budget.waiting) == (0, 0)
    assert await budget.acquire(100) == 100
