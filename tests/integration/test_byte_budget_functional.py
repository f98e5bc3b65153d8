"""The image byte budget against a real loopback image host: downloads wait for room."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from service.config import Settings
from service.jobs.model import ImageOutcome
from service.net.downloader import Downloader, create_client_session
from service.pipeline.flow import Pipeline
from service.pipeline.imaging import MeasureFailure, Measurement, MeasureOptions, measure_image
from tests.support.images import make_image


class HoldingMeasurer:
    """Measures for real, but keeps each image a while, counting how many it holds at once."""

    def __init__(self) -> None:
        self.holding = 0
        self.most_held = 0

    async def measure(self, data: bytes) -> Measurement | MeasureFailure:
        self.holding += 1
        self.most_held = max(self.most_held, self.holding)
        try:
            await asyncio.sleep(0.05)
            return measure_image(
                data, MeasureOptions(verify="full", max_pixels=10_000_000, max_jpeg_scans=100)
            )
        finally:
            self.holding -= 1


async def test_images_held_at_once_stay_within_the_byte_budget(
    aiohttp_server: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    body = make_image(180, 180, "bmp")  # uncompressed: ~97 kB, sent with a Content-Length
    assert 90_000 < len(body) < 125_000

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/bmp")

    app = web.Application()
    app.router.add_get("/img/{number}", image)
    server = await aiohttp_server(app)
    # Room for two such images, while eight downloads may run at once.
    settings = make_settings(max_in_flight=8, max_image_bytes=125_000, image_bytes_budget=250_000)
    session = create_client_session(settings)
    measurer = HoldingMeasurer()
    pipeline = Pipeline(settings, Downloader(session, settings), measurer)
    settled: dict[int, ImageOutcome] = {}

    def on_settled(job_id: int, batch: Sequence[tuple[int, ImageOutcome]]) -> None:
        settled.update(batch)

    images = [(index, str(server.make_url(f"/img/{index}"))) for index in range(16)]
    pipeline.start()
    try:
        pipeline.enqueue(1, iter(images), len(images), on_settled)
        deadline = time.monotonic() + 30
        while len(settled) < len(images):
            assert time.monotonic() < deadline, f"settled {len(settled)} of {len(images)}"
            await asyncio.sleep(0.01)
    finally:
        await pipeline.close()
        await session.close()
    assert set(settled.values()) == {ImageOutcome.measured(180, 180)}
    assert measurer.most_held == 2
    assert pipeline.byte_budget.in_use == 0
