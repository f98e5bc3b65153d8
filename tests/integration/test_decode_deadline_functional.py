"""The decode deadline against the whole service: slow images fail alone, everyone else goes on.

Slow decodes are real: a JPEG scan bomb with the scan limit raised, or a pool
worker told by ``tests.support.pool_faults`` to hold its image (as a decoder
stuck in C code would), or a worker stopped with SIGSTOP.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.api import keys
from service.app import create_app
from service.config import Settings
from tests.support import pool_faults
from tests.support.image_host import ImageHost
from tests.support.images import jpeg_scan_bomb
from tests.support.jobs import submit, visit
from tests.support.polling import eventually, wait_for_status
from tests.support.processes import pid_alive, wait_until_gone

# Short, so each test takes a few deadlines' time; the default is 10 s.
DEADLINE = 1.0
TIMED_OUT = "decode took longer than 1 s"


async def _payload_host(aiohttp_server: Any, payloads: dict[str, bytes]) -> TestServer:
    """Serves ``payloads[name]`` at ``/p/<name>``: command bytes for the fault worker, or a bomb."""

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=payloads[request.match_info["name"]])

    app = web.Application()
    app.router.add_get("/p/{name}", serve)
    server: TestServer = await aiohttp_server(app)
    return server


async def _faulty_service(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    app = create_app(settings)
    app[keys.BATCH_FUNCTION] = pool_faults.measure_batch
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


def _pid_in(path: Path) -> int | None:
    return int(path.read_text()) if path.exists() else None


async def _read_pid(path: Path, *, within: float = 20.0) -> int:
    async def written() -> int | None:
        return _pid_in(path)

    return await eventually(written, within=within)


async def _errors(client: TestClient[Any, Any], job_id: int) -> list[str | None]:
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    return [row["error"] for row in detail["results"]]


async def _queued(client: TestClient[Any, Any], count: int) -> None:
    pool = client.app[keys.MEASURE_POOL]

    async def enough() -> bool | None:
        return True if pool.queued >= count else None

    await eventually(enough, within=20)


async def test_images_past_the_deadline_fail_while_another_clients_job_completes(
    aiohttp_server: Any,
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    tmp_path: Path,
) -> None:
    # Four images that would hold a worker for a minute each, two workers.
    holds = {f"bomb{n}": pool_faults.hold_always(tmp_path / f"bomb{n}") for n in range(4)}
    host = await _payload_host(aiohttp_server, holds)
    client = await _faulty_service(
        aiohttp_client, make_settings(workers=2, decode_timeout=DEADLINE)
    )
    bomb_urls = [str(host.make_url(f"/p/bomb{n}")) for n in range(4)]
    bomb_job = await submit(client, visit("S00339218", *bomb_urls))
    await _queued(client, 2)  # both workers hold a bomb, two more wait

    other_job = await submit(client, visit("RP00001", image_host.url("/img/64x48.jpg")))

    assert await wait_for_status(client, other_job, within=30) == {
        "status": "completed",
        "job_id": other_job,
    }
    assert (await wait_for_status(client, bomb_job, within=30))["status"] == "failed"
    assert await _errors(client, bomb_job) == [TIMED_OUT] * 4
    metrics = await (await client.get("/metrics")).text()
    assert 'retail_pulse_image_failures_total{reason="decode_timeout"} 4.0' in metrics
    # The pool goes on with new workers.
    after = await submit(client, visit("RP00001", image_host.url("/img/12x8.webp")))
    assert await wait_for_status(client, after) == {"status": "completed", "job_id": after}


async def test_a_real_scan_bomb_with_the_scan_limit_raised_fails_at_the_deadline(
    aiohttp_server: Any,
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
) -> None:
    # 38 kB that libjpeg takes about 4 s to decode here: a scan per AC refinement pass.
    bomb = jpeg_scan_bomb(2000, 2000, 1000)
    host = await _payload_host(aiohttp_server, {"bomb": bomb})
    client = await make_client(
        make_settings(workers=2, decode_timeout=DEADLINE, max_jpeg_scans=100_000)
    )
    bomb_urls = [str(host.make_url(f"/p/bomb?copy={n}")) for n in (1, 2)]
    bomb_job = await submit(client, visit("S00339218", *bomb_urls))
    other_job = await submit(client, visit("RP00001", image_host.url("/img/64x48.jpg")))

    assert (await wait_for_status(client, other_job, within=30))["status"] == "completed"
    assert (await wait_for_status(client, bomb_job, within=30))["status"] == "failed"
    assert await _errors(client, bomb_job) == [TIMED_OUT] * 2
    metrics = await (await client.get("/metrics")).text()
    assert 'retail_pulse_image_failures_total{reason="decode_timeout"} 2.0' in metrics


async def test_bystanders_hit_by_two_deadline_rebuilds_are_measured_without_penalty(
    aiohttp_server: Any,
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    attempts = tmp_path / "attempts"
    host = await _payload_host(
        aiohttp_server,
        {
            "gate": pool_faults.wait_for(gate),
            "bystander": pool_faults.count(attempts),
            "bomb1": pool_faults.hold_always(tmp_path / "bomb1"),
            "bomb2": pool_faults.hold_always(tmp_path / "bomb2"),
        },
    )
    # One worker, so the three images queued behind the gate go out as one batch:
    # the bystander (another client's) first, then the two bombs.
    client = await _faulty_service(
        aiohttp_client, make_settings(workers=1, decode_timeout=DEADLINE)
    )
    pool = client.app[keys.MEASURE_POOL]
    await submit(client, visit("RP00001", str(host.make_url("/p/gate"))))
    bystander_job = await submit(client, visit("RP00893", str(host.make_url("/p/bystander"))))
    await _queued(client, 1)
    bomb_urls = [str(host.make_url(f"/p/bomb{n}")) for n in (1, 2)]
    bomb_job = await submit(client, visit("S00339218", *bomb_urls))
    await _queued(client, 3)
    gate.touch()

    assert (await wait_for_status(client, bomb_job, within=30))["status"] == "failed"
    assert await _errors(client, bomb_job) == [TIMED_OUT] * 2
    assert await wait_for_status(client, bystander_job) == {
        "status": "completed",
        "job_id": bystander_job,
    }
    assert await _errors(client, bystander_job) == [None]
    # Measured in the batch each bomb broke, then once more: both rebuilds hit it.
    assert attempts.read_text().splitlines() == ["measured"] * 3
    assert pool.rebuilds >= 2


async def test_a_worker_stopped_while_measuring_is_killed_and_its_image_goes_again(
    aiohttp_server: Any,
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "held.pid"
    host = await _payload_host(aiohttp_server, {"held": pool_faults.hold_once(pid_file)})
    # A deadline well above the time it takes the test to stop the worker: the image
    # must not overrun before it is stopped.
    client = await _faulty_service(aiohttp_client, make_settings(workers=1, decode_timeout=2.0))
    pool = client.app[keys.MEASURE_POOL]
    job_id = await submit(client, visit("RP00001", str(host.make_url("/p/held"))))
    worker = await _read_pid(pid_file)
    os.kill(worker, signal.SIGSTOP)

    # A stopped worker is no image's fault: the image is measured again (the
    # retry finds the pid file and answers 1x1), not failed.
    assert await wait_for_status(client, job_id, within=30) == {
        "status": "completed",
        "job_id": job_id,
    }
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert [(row["width"], row["height"]) for row in detail["results"]] == [(1, 1)]
    assert not await wait_until_gone({worker}, within=10)
    assert pool.rebuilds == 1
    after = await submit(client, visit("RP00001", image_host.url("/img/12x8.webp")))
    assert await wait_for_status(client, after) == {"status": "completed", "job_id": after}


async def test_an_idle_worker_stopped_cannot_hold_up_the_pool(
    make_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
) -> None:
    client = await make_client(make_settings(workers=1, decode_timeout=DEADLINE))
    pool = client.app[keys.MEASURE_POOL]
    # The startup ping started the only worker; stopped, it cannot take the next batch.
    (worker,) = pool._executor._processes
    os.kill(worker, signal.SIGSTOP)
    try:
        job_id = await submit(client, visit("RP00001", image_host.url("/img/30x20.png")))
        assert await wait_for_status(client, job_id, within=30) == {
            "status": "completed",
            "job_id": job_id,
        }
        assert not await wait_until_gone({worker}, within=10)
        assert pool.rebuilds == 1
    finally:
        if pid_alive(worker):
            os.kill(worker, signal.SIGKILL)
