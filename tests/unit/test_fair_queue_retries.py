"""Images back from a retry backoff go before new work, and not at all once their job is gone."""

from __future__ import annotations

from service.pipeline.flow import FairQueue
from tests.unit.test_fair_queue import work


async def test_retried_image_is_served_before_new_images() -> None:
    queue = FairQueue()
    first, second = work(1, 3), work(2, 3)
    queue.add(first)
    queue.add(second)
    assert (await queue.next())[0].job_id == 1
    assert queue.add_retry(second, (9, "job2/9"))
    assert queue.queued_images == 6 - 1 + 1
    job_work, image = await queue.next()
    assert (job_work.job_id, image) == (2, (9, "job2/9"))


async def test_removed_job_loses_its_pending_retries() -> None:
    queue = FairQueue()
    first, second = work(1, 1), work(2, 1)
    queue.add(first)
    queue.add(second)
    assert queue.add_retry(first, (5, "job1/5"))
    assert queue.remove(1) is not None
    assert not queue.add_retry(first, (6, "job1/6"))
    assert (await queue.next())[0].job_id == 2
    assert queue.queued_images == 0
