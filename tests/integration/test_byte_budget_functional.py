"""The image byte budget against a real loopback image host: downloads wait for room."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from service.config import Settings
from service.net.downloader import Downloader, create_client_session
from service.outcomes import ImageOutcome
from service.pipeline.flow import Pipeline
from service.pipeline.imaging import MeasureOptions, measure_image
from tests.support.images import make_image
from tests.support.pipeline import CollectingSink, queue_of


class HoldingMeasurer:
    """Measures for real, but keeps each image a while, counting how many it holds at once."""

    def __init__(self) -> None:
        self.holding = 0
        self.most_held = 0

    async def measure(self, data: bytes) -> ImageOutcome:
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
    session = create_client_session(settings.download)
    measurer = HoldingMeasurer()
    urls = [str(server.make_url(f"/img/{index}")) for index in range(16)]
    sink = CollectingSink()
    pipeline = Pipeline(
        settings.pipeline,
        Downloader(session, settings.download),
        measurer,
        queue_of(1, urls),
        sink,
    )
    pipeline.start()
    try:
        deadline = time.monotonic() + 30
        while len(sink.outcomes) < len(urls):
            assert time.monotonic() < deadline, f"settled {len(sink.outcomes)} of {len(urls)}"
            await asyncio.sleep(0.01)
    finally:
        await pipeline.close()
        await session.close()
    assert set(sink.outcomes.values()) == {ImageOutcome.measured(180, 180)}
    assert measurer.most_held == 2
    assert pipeline.byte_budget.in_use == 0
