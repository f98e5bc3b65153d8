"""A progressive-JPEG scan bomb against the whole service: refused at once, other jobs unharmed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from service.config import Settings
from tests.support.image_host import ImageHost
from tests.support.images import jpeg_scan_bomb
from tests.support.jobs import submit, visit
from tests.support.polling import eventually, wait_for_status

# A blank 7000x7000 progressive JPEG with its last scan repeated 2,000 times: 440 kB
# that took 64 s to decode on the 2-core test machine, far past the deadlines below.
BOMB_REPEATS = 2_000
DEADLINE = 20.0


async def test_scan_bomb_fails_at_once_while_another_job_completes(
    aiohttp_server: Callable[..., Any],
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
) -> None:
    bomb = jpeg_scan_bomb(7000, 7000, BOMB_REPEATS)
    assert len(bomb) < 500_000
    served: list[str] = []

    async def serve_bomb(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(body=bomb, content_type="image/jpeg")

    bomb_app = web.Application()
    bomb_app.router.add_get("/bomb/{name}", serve_bomb)
    bomb_host = await aiohttp_server(bomb_app)
    settings = make_settings()
    assert settings.verify == "full"
    assert settings.workers == 2
    client = await make_client(settings)

    # One copy per pool worker: without the limit, both would be decoding for a minute.
    bomb_urls = [str(bomb_host.make_url(f"/bomb/{n}.jpg")) for n in (1, 2)]
    bomb_job = await submit(client, visit("S00339218", *bomb_urls))

    async def both_served() -> bool | None:
        return True if len(served) == 2 else None

    await eventually(both_served, within=DEADLINE)
    other_job = await submit(client, visit("RP00001", image_host.url("/img/64x48.jpg")))

    other = await wait_for_status(client, other_job, within=DEADLINE)
    assert other["status"] == "completed"
    bombed = await wait_for_status(client, bomb_job, within=DEADLINE)
    assert bombed["status"] == "failed"
    detail = await (await client.get(f"/api/jobs/{bomb_job}")).json()
    assert [row["error"] for row in detail["results"]] == [
        "too many JPEG scans (more than 100)"
    ] * 2
    metrics = await (await client.get("/metrics")).text()
    assert 'retail_pulse_image_failures_total{reason="too_many_scans"} 2.0' in metrics
