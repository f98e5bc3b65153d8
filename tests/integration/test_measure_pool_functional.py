"""The measure pool with real worker processes: batching and failed calls."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.outcomes import ImageOutcome
from service.pipeline.measure_pool import MeasurePool
from service.pipeline.watchdog import is_stopped
from tests.support import pool_faults
from tests.support.images import make_image
from tests.support.processes import pid_alive


async def started_pool(
    on_batch: Callable[[int], None] | None = None, **overrides: Any
) -> MeasurePool:
    """One real worker that obeys tests.support.pool_faults commands, started."""
    values: dict[str, Any] = {"workers": 1, "batch_size": 8, "batch_max_bytes": 50_000_000}
    values.update(overrides)
    pool = MeasurePool(
        Settings(**values).pool, batch_function=pool_faults.measure_batch, on_batch=on_batch
    )
    await pool.ping()
    return pool


@pytest.fixture
async def one_worker_pool() -> AsyncIterator[MeasurePool]:
    pool = await started_pool()
    yield pool
    await pool.close()


async def test_a_call_that_fails_whole_retries_each_image_alone(
    one_worker_pool: MeasurePool, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # The first image holds the only worker, so the next three go out as one batch.
    holder = asyncio.ensure_future(one_worker_pool.measure(pool_faults.wait_for(gate)))
    batch = [make_image(5, 7, "png"), pool_faults.FAILS_IN_COMPANY, make_image(9, 4, "gif")]
    measured = asyncio.gather(*(one_worker_pool.measure(data) for data in batch))
    await asyncio.sleep(0)
    gate.touch()
    assert await asyncio.wait_for(holder, 30) == ImageOutcome.measured(2, 2)
    assert await asyncio.wait_for(measured, 30) == [
        ImageOutcome.measured(5, 7),
        ImageOutcome.measured(3, 3),
        ImageOutcome.measured(9, 4),
    ]


async def test_close_does_not_wait_for_a_batch_nobody_wants(tmp_path: Path) -> None:
    pool = await started_pool()
    (worker,) = pool._executor._processes.values()
    # The worker writes its pid, then holds this image for a minute.
    pid_file = tmp_path / "pid"
    held = asyncio.ensure_future(pool.measure(pool_faults.hold_once(pid_file)))
    deadline = time.monotonic() + 30
    while not pid_file.exists():  # the batch is running in the worker now
        assert time.monotonic() < deadline, "the worker never started the batch"
        await asyncio.sleep(0.02)
    # A deadline against a hang, far above the time close() needs.
    await asyncio.wait_for(pool.close(), 30)
    assert not worker.is_alive()
    held.cancel()


async def test_batches_also_stop_at_the_byte_budget(tmp_path: Path) -> None:
    image = make_image(64, 64, "png")
    sizes: list[int] = []
    pool = await started_pool(batch_max_bytes=2 * len(image), on_batch=sizes.append)
    try:
        gate = tmp_path / "gate"
        # The first image holds the only worker while five more queue up behind it.
        holder = asyncio.ensure_future(pool.measure(pool_faults.wait_for(gate)))
        queued = asyncio.gather(*(pool.measure(image) for _ in range(5)))
        await asyncio.sleep(0)
        gate.touch()
        await asyncio.wait_for(holder, 30)
        assert await asyncio.wait_for(queued, 30) == [ImageOutcome.measured(64, 64)] * 5
    finally:
        await pool.close()
    # Up to the budget (two images), never the eight the count cap allows.
    assert sizes == [1, 2, 2, 1]


async def test_close_does_not_wait_for_a_stopped_worker() -> None:
    pool = await started_pool()
    (worker,) = pool._executor._processes
    os.kill(worker, signal.SIGSTOP)  # idle, and deaf to the shutdown sentinel
    try:
        deadline = time.monotonic() + 10
        while not is_stopped(worker):  # the signal takes effect when it is next scheduled
            assert time.monotonic() < deadline, "the worker never stopped"
            await asyncio.sleep(0.01)
        # A deadline against a hang, far above the time close() needs.
        await asyncio.wait_for(pool.close(), 30)
        assert not pid_alive(worker)
    finally:
        if pid_alive(worker):
            os.kill(worker, signal.SIGKILL)


async def test_idle_workers_share_the_queue_after_a_rebuild(tmp_path: Path) -> None:
    # Two workers each hold an image past the deadline while two more images queue:
    # one that will hold too, then a good one. The watchdog's rebuild leaves both
    # workers idle at once; the good image must not wait behind the slow one.
    pool = await started_pool(workers=2, decode_timeout=1.0)
    try:
        held = [
            asyncio.ensure_future(pool.measure(pool_faults.hold_always(tmp_path / f"held{n}")))
            for n in (1, 2)
        ]
        await asyncio.sleep(0)
        slow = asyncio.ensure_future(pool.measure(pool_faults.hold_always(tmp_path / "slow")))
        good = asyncio.ensure_future(pool.measure(make_image(6, 9, "png")))
        await asyncio.sleep(0)
        assert pool.queued == 2

        assert await asyncio.wait_for(good, 30) == ImageOutcome.measured(6, 9)
        assert not slow.done()
        timed_out = "decode took longer than 1 s"
        assert (await asyncio.wait_for(slow, 30)).error == timed_out
        assert [(await call).error for call in held] == [timed_out] * 2
    finally:
        await pool.close()


async def test_a_ping_gets_past_a_stopped_idle_worker() -> None:
    # What /readyz does: a stopped worker would hold the ping up for good.
    pool = await started_pool(decode_timeout=1.0)
    (worker,) = pool._executor._processes
    os.kill(worker, signal.SIGSTOP)
    try:
        assert await asyncio.wait_for(pool.ping(), 30)
        assert not pid_alive(worker)
        assert pool.rebuilds == 1
    finally:
        if pid_alive(worker):
            os.kill(worker, signal.SIGKILL)
        await pool.close()
