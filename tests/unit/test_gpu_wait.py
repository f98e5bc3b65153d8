"""The simulated GPU wait: within the configured range, and batched onto a grid of ticks."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

import pytest

from service.config import Settings
from service.jobs.model import ImageOutcome
from service.pipeline.flow import GPU_WAIT_TICK, Pipeline, gpu_wait_ends
from service.pipeline.imaging import MeasureFailure, Measurement
from tests.support.fetchers import UrlBytesFetcher


class ClockedMeasurer:
    """Measures at once and notes the loop time each image was measured at."""

    def __init__(self) -> None:
        self.measured_at: dict[bytes, float] = {}

    async def measure(self, data: bytes) -> Measurement | MeasureFailure:
        self.measured_at[data] = asyncio.get_running_loop().time()
        return Measurement(4, 3)


@pytest.mark.parametrize("seed", range(5))
def test_waits_end_on_the_grid_inside_the_configured_range(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        low = rng.choice([0.0, 0.1, 0.25])
        high = low + rng.choice([0.0, 0.005, 0.3])
        now = rng.uniform(0, 100_000)
        delay = rng.uniform(low, high)
        ends = gpu_wait_ends(now, delay, high)
        assert delay - 1e-6 <= ends - now <= high + 1e-6
        on_grid = abs(ends / GPU_WAIT_TICK - round(ends / GPU_WAIT_TICK)) < 1e-6
        # Off the grid only where the next tick would overshoot the longest wait.
        assert on_grid or ends == now + high


async def test_images_due_at_one_tick_settle_as_one_batch() -> None:
    settings = Settings(max_in_flight=100, gpu_delay_min=0.05, gpu_delay_max=0.08)
    measurer = ClockedMeasurer()
    pipeline = Pipeline(settings, UrlBytesFetcher(), measurer, rng=random.Random(7))
    batches: list[tuple[float, Sequence[tuple[int, ImageOutcome]]]] = []

    def on_settled(job_id: int, batch: Sequence[tuple[int, ImageOutcome]]) -> None:
        batches.append((asyncio.get_running_loop().time(), list(batch)))

    images = [(index, f"http://h/{index}") for index in range(200)]
    pipeline.start()
    try:
        pipeline.enqueue(1, iter(images), len(images), on_settled)
        deadline = time.monotonic() + 10
        while sum(len(batch) for _, batch in batches) < len(images):
            assert time.monotonic() < deadline, f"settled {len(batches)} batches"
            await asyncio.sleep(0.01)
    finally:
        await pipeline.close()
    settled = {index: (at, outcome) for at, batch in batches for index, outcome in batch}
    assert len(settled) == len(images)
    for index, url in images:
        at, outcome = settled[index]
        assert outcome == ImageOutcome.measured(4, 3)
        # Never shorter than the shortest configured wait.
        assert at - measurer.measured_at[url.encode()] >= 0.05 - 1e-6
    # 200 waits spread over 30 ms end on a handful of ticks (plus those clamped to
    # the longest wait), not on 200 timers.
    assert len(batches) <= 12, [len(batch) for _, batch in batches]
