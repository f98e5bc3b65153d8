"""Pipeline workers survive what happens to the futures they await."""

from __future__ import annotations

import asyncio
import time

from service.config import Settings
from service.outcomes import FailureKind, ImageOutcome
from service.pipeline.flow import Pipeline
from tests.support.fetchers import UrlBytesFetcher
from tests.support.pipeline import CollectingSink, queue_of


class FirstMeasureCancelledElsewhere:
    """The first image's future is cancelled by someone else, as a closing pool does."""

    def __init__(self) -> None:
        self.first: asyncio.Future[ImageOutcome] | None = None

    async def measure(self, data: bytes) -> ImageOutcome:
        if self.first is None:
            self.first = asyncio.get_running_loop().create_future()
            return await self.first
        return ImageOutcome.measured(2, 3)


async def test_a_future_cancelled_elsewhere_costs_one_image_not_the_worker() -> None:
    measurer = FirstMeasureCancelledElsewhere()
    settings = Settings(max_in_flight=1, gpu_delay_min=0, gpu_delay_max=0).pipeline
    sink = CollectingSink()
    queue = queue_of(1, ["a", "b"])
    pipeline = Pipeline(settings, UrlBytesFetcher(), measurer, queue, sink)
    pipeline.start()
    try:
        deadline = time.monotonic() + 10
        while measurer.first is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        measurer.first.cancel()
        while len(sink.outcomes) < 2:  # the one worker must go on to the second image
            assert time.monotonic() < deadline, f"settled only {sink.outcomes}"
            await asyncio.sleep(0.01)
    finally:
        await pipeline.close()
    assert sink.outcomes[0] == ImageOutcome.failed(
        "image processing was cancelled", FailureKind.INTERNAL
    )
    assert sink.outcomes[1] == ImageOutcome.measured(2, 3)
