"""The simulated GPU wait: scheduled inside the configured range, batched onto a grid of ticks."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

import pytest

from service.config import Settings
from service.outcomes import ImageOutcome
from service.pipeline.flow import GPU_WAIT_TICK, Pipeline, SettledImage, gpu_wait_ends
from tests.support.fetchers import UrlBytesFetcher
from tests.support.pipeline import CollectingSink, ManualClock, queue_of


class InstantMeasurer:
    async def measure(self, data: bytes) -> ImageOutcome:
        return ImageOutcome.measured(4, 3)


class ClockedMeasurer:
    """Measures at once and notes the loop time each image was measured at."""

    def __init__(self) -> None:
        self.measured_at: dict[bytes, float] = {}

    async def measure(self, data: bytes) -> ImageOutcome:
        self.measured_at[data] = asyncio.get_running_loop().time()
        return ImageOutcome.measured(4, 3)


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


@pytest.mark.parametrize(("low", "high"), [(0.1, 0.4), (0.25, 0.25), (0.0, 0.05), (1.5, 3.0)])
async def test_every_wait_is_scheduled_inside_the_configured_range(low: float, high: float) -> None:
    # The pipeline's timers go to a clock that stands still, so each scheduled end
    # is compared with the moment its image was measured, not with wall time.
    settings = Settings(max_in_flight=8, gpu_delay_min=low, gpu_delay_max=high).pipeline
    clock = ManualClock(now=5000.0)
    sink = CollectingSink()
    urls = [f"http://h/{index}" for index in range(300)]
    pipeline = Pipeline(
        settings,
        UrlBytesFetcher(),
        InstantMeasurer(),
        queue_of(1, urls),
        sink,
        rng=random.Random(11),
        clock=clock,
    )
    pipeline.start()
    try:
        deadline = time.monotonic() + 10
        while len(clock.timers) < 1 or pipeline.queued_images or pipeline.in_flight:
            assert time.monotonic() < deadline, "images never reached the GPU wait"
            await asyncio.sleep(0.005)
        waits = [when - clock.now for when, _, _ in clock.timers]
        assert min(waits) >= low - 1e-9
        assert max(waits) <= high + 1e-9
        ticks = len(clock.timers)
        assert not sink.outcomes  # nothing settles before its wait is over
        clock.fire_all()
        while len(sink.outcomes) < len(urls):
            assert time.monotonic() < deadline, f"settled {len(sink.outcomes)}"
            await asyncio.sleep(0.005)
    finally:
        await pipeline.close()
    assert set(sink.outcomes.values()) == {ImageOutcome.measured(4, 3)}
    # Images due at one tick share its timer: at most one per tick in the range (and
    # the clamp to the longest wait), never one per image.
    assert ticks <= round((high - low) / GPU_WAIT_TICK) + 2


async def test_images_due_at_one_tick_settle_as_one_batch() -> None:
    settings = Settings(max_in_flight=100, gpu_delay_min=0.05, gpu_delay_max=0.08).pipeline
    measurer = ClockedMeasurer()
    urls = [f"http://h/{index}" for index in range(200)]
    settled_at: dict[int, float] = {}

    class TimedSink(CollectingSink):
        def settle(self, settled: Sequence[SettledImage]) -> None:
            for task, _ in settled:
                settled_at[task.index] = asyncio.get_running_loop().time()
            super().settle(settled)

    sink = TimedSink()
    pipeline = Pipeline(
        settings, UrlBytesFetcher(), measurer, queue_of(1, urls), sink, rng=random.Random(7)
    )
    pipeline.start()
    try:
        deadline = time.monotonic() + 10
        while len(sink.outcomes) < len(urls):
            assert time.monotonic() < deadline, f"settled {len(sink.batches)} batches"
            await asyncio.sleep(0.01)
    finally:
        await pipeline.close()
    for index, url in enumerate(urls):
        assert sink.outcomes[index] == ImageOutcome.measured(4, 3)
        # Never shorter than the shortest configured wait.
        assert settled_at[index] - measurer.measured_at[url.encode()] >= 0.05 - 1e-6
    # 200 waits spread over 30 ms end on a handful of ticks (plus those clamped to
    # the longest wait), not on 200 timers.
    assert len(sink.batches) <= 12, [len(batch) for batch in sink.batches]
