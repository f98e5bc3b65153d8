"""The pipeline's fair queue takes turns between jobs."""

from __future__ import annotations

import asyncio

from service.pipeline.flow import FairQueue, _JobWork


def work(job_id: int, count: int) -> _JobWork:
    images = iter([(index, f"job{job_id}/{index}") for index in range(count)])
    return _JobWork(job_id, images, count, lambda job, settled: None)


async def test_round_robin_between_jobs() -> None:
    queue = FairQueue()
    queue.add(work(1, 4))
    queue.add(work(2, 2))
    order = [(await queue.next())[0].job_id for _ in range(6)]
    assert order == [1, 2, 1, 2, 1, 1]
    assert queue.queued_images == 0


async def test_waits_for_work_then_wakes() -> None:
    queue = FairQueue()
    waiter = asyncio.create_task(queue.next())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.add(work(7, 1))
    job_work, image = await asyncio.wait_for(waiter, 5)
    assert (job_work.job_id, image) == (7, (0, "job7/0"))


async def test_removed_job_hands_out_nothing_more() -> None:
    queue = FairQueue()
    queue.add(work(1, 3))
    queue.add(work(2, 1))
    assert queue.remove(1) is not None
    assert (await queue.next())[0].job_id == 2
    assert queue.queued_images == 0
