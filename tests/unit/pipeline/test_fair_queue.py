"""The fair queue takes turns between jobs; images back from a backoff go first."""

from __future__ import annotations

import asyncio
import time

from service.pipeline.fair_queue import FairQueue, ImageTask


def tasks(job_id: int, count: int) -> list[ImageTask]:
    return [ImageTask(job_id, index, f"job{job_id}/{index}") for index in range(count)]


def add(queue: FairQueue, job_id: int, count: int) -> None:
    queue.add(job_id, iter(tasks(job_id, count)), count)


async def wait_until(condition: object) -> None:
    deadline = time.monotonic() + 5
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.005)


async def test_round_robin_between_jobs() -> None:
    queue = FairQueue()
    add(queue, 1, 4)
    add(queue, 2, 2)
    order = [(await queue.next()).job_id for _ in range(6)]
    assert order == [1, 2, 1, 2, 1, 1]
    assert queue.queued_images == 0


async def test_waits_for_work_then_wakes() -> None:
    queue = FairQueue()
    waiter = asyncio.create_task(queue.next())
    await asyncio.sleep(0)
    assert not waiter.done()
    add(queue, 7, 1)
    assert await asyncio.wait_for(waiter, 5) == ImageTask(7, 0, "job7/0")


async def test_removed_job_hands_out_nothing_more() -> None:
    queue = FairQueue()
    add(queue, 1, 3)
    add(queue, 2, 1)
    queue.remove(1)
    assert (await queue.next()).job_id == 2
    assert queue.queued_images == 0


async def test_retried_image_comes_back_after_its_delay_before_new_images() -> None:
    queue = FairQueue()
    add(queue, 1, 3)
    add(queue, 2, 3)
    first = await queue.next()
    queue.retry_later(first.next_attempt(), 0.01)
    assert queue.queued_images == 6  # five fresh, one backing off
    await wait_until(lambda: queue._retries)
    assert await queue.next() == ImageTask(1, 0, "job1/0", attempt=2)
    assert (await queue.next()).job_id == 2


async def test_removed_job_loses_its_backoffs_and_later_retries() -> None:
    queue = FairQueue()
    add(queue, 1, 2)
    add(queue, 2, 1)
    first = await queue.next()
    queue.retry_later(first.next_attempt(), 0.01)
    queue.remove(1)
    assert queue.queued_images == 1
    # An image of the removed job still in flight asks again: it is dropped.
    queue.retry_later(ImageTask(1, 1, "job1/1", attempt=2), 0.0)
    await asyncio.sleep(0.05)
    assert (await queue.next()).job_id == 2
    assert queue.queued_images == 0
    assert not queue._retries


async def test_close_cancels_pending_backoffs() -> None:
    queue = FairQueue()
    add(queue, 1, 1)
    queue.retry_later((await queue.next()).next_attempt(), 0.01)
    await queue.close()
    await asyncio.sleep(0.05)
    assert not queue._retries


async def test_more_images_of_a_queued_job_join_its_turns() -> None:
    queue = FairQueue()
    add(queue, 1, 1)
    add(queue, 2, 1)
    queue.add(1, iter([ImageTask(1, 5, "job1/5")]), 1)  # a second claim of job 1
    assert queue.queued_images == 3
    order = [(task.job_id, task.index) for task in [await queue.next() for _ in range(3)]]
    assert order == [(1, 0), (2, 0), (1, 5)]
    queue.add(2, iter([ImageTask(2, 9, "job2/9")]), 1)  # job 2 had left the turns
    assert await queue.next() == ImageTask(2, 9, "job2/9")
    queue.remove(1)
    assert queue.queued_images == 0


async def test_a_paused_queue_hands_out_nothing_until_resumed() -> None:
    queue = FairQueue()
    add(queue, 1, 1)
    queue.pause()
    waiter = asyncio.create_task(queue.next())
    await asyncio.sleep(0.02)
    assert not waiter.done()
    queue.resume()
    assert (await asyncio.wait_for(waiter, 5)).job_id == 1
