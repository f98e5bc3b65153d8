"""Images handed back after waiting for a circuit take their own job's turn, not everyone's."""

from __future__ import annotations

from service.pipeline.fair_queue import FairQueue, ImageTask


def tasks(job_id: int, count: int) -> list[ImageTask]:
    return [ImageTask(job_id, index, f"job{job_id}/{index}") for index in range(count)]


async def test_a_herd_of_one_jobs_images_comes_back_in_turns_with_other_jobs() -> None:
    queue = FairQueue()
    queue.add(1, iter(tasks(1, 3)), 3)
    waited = [await queue.next() for _ in range(3)]  # all met an open circuit
    queue.add(2, iter(tasks(2, 3)), 3)
    for task in waited:
        assert queue.requeue(task.waiting_until(5.0))
    assert queue.queued_images == 6
    order = [await queue.next() for _ in range(6)]
    assert [task.job_id for task in order] == [1, 2, 1, 2, 1, 2]
    assert [task.index for task in order if task.job_id == 1] == [0, 1, 2]
    assert all(task.wait_until == 5.0 and task.attempt == 1 for task in order if task.job_id == 1)
    assert queue.queued_images == 0


async def test_a_requeued_image_goes_before_its_jobs_new_images() -> None:
    queue = FairQueue()
    queue.add(1, iter(tasks(1, 3)), 3)
    first = await queue.next()
    assert queue.requeue(first)
    assert [(await queue.next()).index for _ in range(3)] == [0, 1, 2]


async def test_requeue_refuses_an_image_of_a_removed_job() -> None:
    queue = FairQueue()
    queue.add(1, iter(tasks(1, 2)), 2)
    first = await queue.next()
    assert queue.requeue(first)
    queue.remove(1)
    assert not queue.requeue(first)
    assert queue.queued_images == 0
