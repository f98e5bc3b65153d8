"""A pool worker killed with SIGKILL mid-batch: the pool is rebuilt, images retried, then failed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.api import keys
from service.app import create_app
from service.config import Settings
from service.pipeline.measure_pool import CRASHED_REASON
from tests.support import pool_faults
from tests.support.image_host import ImageHost
from tests.support.jobs import submit, visit
from tests.support.polling import wait_for_status
from tests.support.processes import children, kill_quietly


async def _fault_host(aiohttp_server: Any, payloads: dict[str, bytes]) -> TestServer:
    """Serves ``payloads[name]`` at ``/fault/<name>``: command bytes for the fault worker."""

    async def fault(request: web.Request) -> web.Response:
        return web.Response(body=payloads[request.match_info["name"]])

    app = web.Application()
    app.router.add_get("/fault/{name}", fault)
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
    deadline = time.monotonic() + within
    while (pid := _pid_in(path)) is None:
        assert time.monotonic() < deadline, f"no worker wrote {path}"
        await asyncio.sleep(0.02)
    return pid


async def test_killed_worker_is_replaced_and_its_batch_retried(
    aiohttp_server: Any,
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "held.pid"
    faults = await _fault_host(aiohttp_server, {"hold": pool_faults.hold_once(pid_file)})
    # One worker: whatever batch the held image is in dies with it.
    client = await _faulty_service(aiohttp_client, make_settings(workers=1, batch_size=16))
    pool = client.app[keys.MEASURE_POOL]
    job_id = await submit(
        client,
        visit("RP00001", str(faults.make_url("/fault/hold")), image_host.url("/img/30x20.png")),
    )

    os.kill(await _read_pid(pid_file), signal.SIGKILL)

    # The retry finds the pid file and answers 1x1: the image was measured again.
    assert await wait_for_status(client, job_id) == {"status": "completed", "job_id": job_id}
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert [(row["width"], row["height"]) for row in detail["results"]] == [(1, 1), (30, 20)]
    assert pool.rebuilds == 1

    # The service keeps serving with its new pool.
    after = await submit(client, visit("RP00001", image_host.url("/img/12x8.webp")))
    assert await wait_for_status(client, after) == {"status": "completed", "job_id": after}


async def test_image_that_kills_its_worker_twice_fails_alone_with_a_clear_reason(
    aiohttp_server: Any,
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    image_host: ImageHost,
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "poison"
    gate = tmp_path / "gate"
    faults = await _fault_host(
        aiohttp_server,
        {"poison": pool_faults.hold_always(prefix), "gate": pool_faults.wait_for(gate)},
    )
    client = await _faulty_service(aiohttp_client, make_settings(workers=1, batch_size=16))
    pool = client.app[keys.MEASURE_POOL]
    # Keep the only worker busy, so the next job's two images queue up and go out
    # together in one batch when it frees.
    gate_job = await submit(client, visit("RP00001", str(faults.make_url("/fault/gate"))))
    poison_url = str(faults.make_url("/fault/poison"))
    job_id = await submit(client, visit("RP00001", poison_url, image_host.url("/img/40x10.jpg")))
    deadline = time.monotonic() + 20
    while pool.queued < 2:
        assert time.monotonic() < deadline, "the job's images never queued for the pool"
        await asyncio.sleep(0.02)
    _open(gate)

    os.kill(await _read_pid(Path(f"{prefix}.1")), signal.SIGKILL)
    os.kill(await _read_pid(Path(f"{prefix}.2")), signal.SIGKILL)

    body = await wait_for_status(client, job_id)
    assert body["status"] == "failed"
    assert body["error"] == [
        {"store_id": "RP00001", "error": f"image {poison_url} failed: {CRASHED_REASON}"}
    ]
    detail = await (await client.get(f"/api/jobs/{job_id}")).json()
    # Its batch-mate was retried alone, so the poison image did not take it down twice.
    assert detail["results"][1]["perimeter"] == 100
    assert _pid_in(Path(f"{prefix}.3")) is None
    assert pool.rebuilds == 2
    assert (await wait_for_status(client, gate_job))["status"] == "completed"

    after = await submit(client, visit("RP00001", image_host.url("/img/12x8.webp")))
    assert await wait_for_status(client, after) == {"status": "completed", "job_id": after}


def _open(gate: Path) -> None:
    gate.touch()


async def test_worker_killed_while_idle_does_not_break_later_jobs(
    client: TestClient[Any, Any], image_host: ImageHost
) -> None:
    before = await submit(client, visit("RP00001", image_host.url("/img/10x10.png")))
    assert (await wait_for_status(client, before))["status"] == "completed"
    # Pool workers are forked by the forkserver, our child: they are our grandchildren.
    workers = {pid for child in children(os.getpid()) for pid in children(child)}
    assert workers
    for pid in workers:
        kill_quietly(pid, signal.SIGKILL)

    job_id = await submit(
        client, visit("RP00001", *(image_host.url(f"/img/{n}x5.png") for n in range(1, 9)))
    )
    assert await wait_for_status(client, job_id) == {"status": "completed", "job_id": job_id}
    assert client.app[keys.MEASURE_POOL].rebuilds == 1
