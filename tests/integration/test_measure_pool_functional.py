"""The measure pool with real worker processes: batching and failed calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.imaging import Measurement
from service.measure_pool import MeasurePool
from tests.support import pool_faults
from tests.support.images import make_image


@pytest.fixture
async def one_worker_pool() -> AsyncIterator[MeasurePool]:
    pool = MeasurePool(
        workers=1,
        verify="full",
        max_pixels=50_000_000,
        max_batch=8,
        batch_function=pool_faults.measure_batch,
    )
    await pool.ping()
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
    assert await asyncio.wait_for(holder, 30) == Measurement(2, 2)
    assert await asyncio.wait_for(measured, 30) == [
        Measurement(5, 7),
        Measurement(3, 3),
        Measurement(9, 4),
    ]
