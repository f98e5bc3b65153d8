"""Pipeline workers survive what happens to the futures they await."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from service.config import Settings
from service.jobs.model import ImageOutcome
from service.pipeline.flow import Pipeline
from service.pipeline.imaging import MeasureFailure, Measurement
from tests.support.fetchers import UrlBytesFetcher


class FirstMeasureCancelledElsewhere:
    """The first image's future is cancelled by someone else, as a closing pool does."""

    def __init__(self) -> None:
        self.first: asyncio.Future[Measurement | MeasureFailure] | None = None

    async def measure(self, data: bytes) -> Measurement | MeasureFailure:
        if self.first is None:
            self.first = asyncio.get_running_loop().create_future()
            return await self.first
        return Measurement(2, 3)


async def test_a_future_cancelled_elsewhere_costs_one_image_not_the_worker() -> None:
    measurer = FirstMeasureCancelledElsewhere()
    settings = Settings(max_in_flight=1, gpu_delay_min=0, gpu_delay_max=0)
    pipeline = Pipeline(settings, UrlBytesFetcher(), measurer)
    settled: dict[int, ImageOutcome] = {}

    def on_settled(job_id: int, batch: Sequence[tuple[int, ImageOutcome]]) -> None:
        settled.update(batch)

    pipeline.start()
    try:
        pipeline.enqueue(1, iter([(0, "a"), (1, "b")]), 2, on_settled)
        deadline = time.monotonic() + 10
        while measurer.first is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        measurer.first.cancel()
        while len(settled) < 2:  # the one worker must go on to the second image
            assert time.monotonic() < deadline, f"settled only {settled}"
            await asyncio.sleep(0.01)
    finally:
        await pipeline.close()
    assert settled[0] == ImageOutcome.failed("image processing was cancelled")
    assert settled[1] == ImageOutcome.measured(2, 3)
