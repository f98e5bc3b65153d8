"""SIGKILL the real service: its forkserver, resource tracker and pool workers die with it."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.image_host import ImageHost
from tests.support.images import jpeg_scan_bomb
from tests.support.jobs import submit, visit
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess, children, descendants, wait_until_gone


@pytest.fixture
async def service(stores_csv: Path) -> AsyncIterator[ServiceProcess]:
    started = ServiceProcess(
        {
            "RP_STORES": str(stores_csv),
            "RP_WORKERS": "2",
            # A scan bomb keeps a worker busy when the service dies.
            "RP_MAX_JPEG_SCANS": "100000",
            "RP_DECODE_TIMEOUT": "60",
            "RP_LOG_LEVEL": "warning",
        }
    )
    try:
        await asyncio.to_thread(started.wait_healthy)
        yield started
    finally:
        # Whatever the test left; the test itself kills the main process alone.
        await asyncio.to_thread(started.kill)


async def test_sigkill_of_the_service_leaves_no_process_behind(
    service: ServiceProcess, image_host: ImageHost, aiohttp_server: Any
) -> None:
    bomb = jpeg_scan_bomb(2000, 2000, 1000)

    async def serve_bomb(request: web.Request) -> web.Response:
        return web.Response(body=bomb, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/bomb", serve_bomb)
    bomb_host = await aiohttp_server(app)
    main = service.process.pid
    async with aiohttp.ClientSession(service.base_url) as session:
        # Two images at once start the second worker; the bomb then holds one.
        await submit(
            session,
            visit("RP00001", str(bomb_host.make_url("/bomb")), image_host.url("/img/9x9.png")),
        )

        async def both_workers() -> set[int] | None:
            helpers = children(main)
            workers = descendants(main) - helpers
            return helpers | workers if len(helpers) == 2 and len(workers) == 2 else None

        family = await eventually(both_workers, within=20)

    os.kill(main, signal.SIGKILL)  # the main process only, not its group

    assert not await wait_until_gone(family, within=5)
